//! The InferenceService controller. Level-triggered and idempotent: each pass reads
//! the services and their revisions from the store and the replicas from the
//! scheduler, then creates revisions for spec changes, fetches model files once per
//! revision, starts and stops replicas (workloads) to what the autoscaler wants,
//! probes readiness, splits traffic and writes KServe-shaped status. Replica ids
//! are `<revision uid>-<slot>` with the slot counter persisted before the submit,
//! so a restarted daemon finds its replicas instead of starting them twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use super::autoscaler::{Kpa, KpaConfig};
use super::cache::ResponseCache;
use super::dataplane::{DataPlane, RevisionLabels, ServiceRoute};
use super::isvc::{self, Component, Storage, Workload as Spec};
use super::pool::RevisionPool;
use super::runtimes::RuntimeTable;
use super::seconds;
use super::service::STORE_KIND;
use crate::config::ServingConfig;
use crate::model::strict::MAX_SECONDS;
use crate::runtime::{Owner, ResourceRequest, Workload};
use crate::scheduler::{
    PriorityClass, Scheduler, SchedulerError, WorkloadPhase, WorkloadRecord, WorkloadRequest,
};
use crate::store::{resources, NewResource, Resource, Store, StoreError};

pub const REVISION_KIND: &str = "InferenceServiceRevision";
pub(crate) const REVISION_LABEL: &str = "serving.hearth.dev/revision";
pub(crate) const PORT_LABEL: &str = "serving.hearth.dev/port";

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One component of a revision: its pool key (also the replicas' revision label).
struct Unit {
    key: String,
    component: Component,
    transformer: bool,
}

/// In-memory state per revision: its pool in the data plane and its autoscaler.
struct RevState {
    pool: Arc<RevisionPool>,
    kpa: Kpa,
    created: Instant,
    cache: Option<Arc<ResponseCache>>,
}

pub struct Controller {
    pub store: Store,
    pub scheduler: Scheduler,
    pub plane: Arc<DataPlane>,
    pub runtimes: Arc<RuntimeTable>,
    pub config: Arc<ServingConfig>,
    pub data_dir: PathBuf,
    pub wake: Arc<Notify>,
    revisions: Mutex<HashMap<String, RevState>>,
    draining: Mutex<HashSet<String>>,
    /// Replicas this controller stopped (drained, timed out); any other exit of a
    /// replica is a failure, whatever its code (MLServer exits 0 when a model fails
    /// to load).
    stopped: Mutex<HashSet<String>>,
    /// Model fetches under way, by revision uid.
    fetches: Mutex<HashMap<String, tokio::task::JoinHandle<Result<PathBuf, FetchFailure>>>>,
    /// Running replicas that have not passed their readiness check yet. While requests
    /// wait at the activator only these are probed, every few milliseconds, instead of
    /// a whole reconcile pass: a model server starting up needs the CPU.
    unready: Mutex<HashMap<String, Unready>>,
    /// How long starting replicas have run, for the readiness timeout (monotonic).
    starting_for: crate::clock::SinceClock,
    /// Uids of revisions whose state and model cache have been given back (see
    /// `retire_idle_revisions`), so that each is retired once rather than every pass.
    retired: Mutex<HashSet<String>>,
}

/// What a readiness probe of one starting replica needs.
struct Unready {
    pool: Arc<RevisionPool>,
    addr: SocketAddr,
    component: Component,
    model: String,
}

fn kpa_config(c: &ServingConfig) -> KpaConfig {
    KpaConfig {
        stable_window: seconds(c.stable_window_seconds),
        panic_window: seconds(c.panic_window_seconds),
        panic_threshold: c.panic_threshold_percent / 100.0,
        scale_to_zero_grace: seconds(c.scale_to_zero_grace_seconds),
    }
}

fn now() -> String {
    crate::store::now_rfc3339()
}

fn condition(kind: &str, ok: bool, reason: &str, message: &str) -> Value {
    json!({"type": kind, "status": if ok { "True" } else { "False" }, "reason": reason, "message": message, "lastTransitionTime": now()})
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Largest local model copied into the cache; a larger tree is refused rather than
/// filling the disk (a `storageUri: file:///` would otherwise copy the whole host).
const MAX_LOCAL_MODEL_BYTES: u64 = 64 << 30;
const MAX_LOCAL_MODEL_FILES: u64 = 100_000;

/// Copies regular files and directories (symlinks are not followed), counting bytes.
fn copy_tree(from: &Path, to: &Path, budget: &mut (u64, u64)) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(from).map_err(|e| format!("{}: {e}", from.display()))?;
    budget.1 += 1;
    if budget.1 > MAX_LOCAL_MODEL_FILES {
        return Err(format!(
            "more than {MAX_LOCAL_MODEL_FILES} files; point storageUri at the model's own directory"
        ));
    }
    if meta.is_dir() {
        std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
        let entries = std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| e.to_string())?;
            copy_tree(&entry.path(), &to.join(entry.file_name()), budget)?;
        }
        Ok(())
    } else if meta.is_file() {
        budget.0 += meta.len();
        if budget.0 > MAX_LOCAL_MODEL_BYTES {
            return Err(format!("the model is larger than {MAX_LOCAL_MODEL_BYTES} bytes"));
        }
        std::fs::copy(from, to)
            .map(|_| ())
            .map_err(|e| format!("{}: {e}", from.display()))
    } else {
        Ok(())
    }
}

impl Controller {
    pub fn new(
        store: Store,
        scheduler: Scheduler,
        plane: Arc<DataPlane>,
        runtimes: Arc<RuntimeTable>,
        data_dir: PathBuf,
        wake: Arc<Notify>,
    ) -> Controller {
        Controller {
            store,
            scheduler,
            config: Arc::clone(&plane.config),
            plane,
            runtimes,
            data_dir,
            wake,
            revisions: Mutex::new(HashMap::new()),
            draining: Mutex::new(HashSet::new()),
            stopped: Mutex::new(HashSet::new()),
            fetches: Mutex::new(HashMap::new()),
            unready: Mutex::new(HashMap::new()),
            starting_for: crate::clock::SinceClock::default(),
            retired: Mutex::new(HashSet::new()),
        }
    }

    /// The loop: a pass on every wake (API writes, requests waiting at zero,
    /// workload events) and every autoscaler tick.
    pub async fn run(self: Arc<Self>, health: crate::health::Health) {
        health.set("serving-controller", true, "running");
        let mut events = self.scheduler.subscribe();
        let tick = Duration::from_millis(self.config.autoscaler_tick_ms);
        let http = awc::Client::builder().timeout(Duration::from_secs(2)).finish();
        let mut last_pass = Instant::now().checked_sub(tick).unwrap_or_else(Instant::now);
        loop {
            // While requests wait at the activator, starting replicas are probed every
            // few milliseconds (the probe cadence is most of a cold start beyond the
            // runtime's own start-up); whole passes keep their usual cadence.
            let waiting = self.requests_waiting();
            if !waiting || last_pass.elapsed() >= tick || !self.probe_unready(&http).await {
                self.sample();
                if let Err(e) = self.reconcile_all(&http).await {
                    tracing::warn!(error = %e, "serving controller pass failed; retrying");
                }
                last_pass = Instant::now();
            }
            let pause = if self.requests_waiting() {
                Duration::from_millis(5)
            } else {
                tick
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
                event = events.recv() => {
                    if let Err(tokio::sync::broadcast::error::RecvError::Closed) = event {
                        tokio::time::sleep(tick).await;
                    }
                }
            }
        }
    }

    /// Probes the replicas known to be starting; true when there were any to probe
    /// and none became ready (so a whole pass can wait).
    async fn probe_unready(&self, http: &awc::Client) -> bool {
        let candidates: Vec<(String, Arc<RevisionPool>, SocketAddr, Component, String)> = self
            .unready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, u)| {
                (
                    id.clone(),
                    Arc::clone(&u.pool),
                    u.addr,
                    u.component.clone(),
                    u.model.clone(),
                )
            })
            .collect();
        if candidates.is_empty() {
            return false;
        }
        for (id, pool, addr, component, model) in candidates {
            if self.probe(http, addr, &component, &model).await {
                pool.add_ready(&id, addr);
                self.unready.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                return false;
            }
        }
        true
    }

    fn requests_waiting(&self) -> bool {
        let revisions = self.revisions.lock().unwrap_or_else(|p| p.into_inner());
        revisions
            .values()
            .any(|s| s.pool.queued.load(std::sync::atomic::Ordering::SeqCst) > 0)
    }

    /// Feeds each revision's autoscaler with its load now.
    pub fn sample(&self) {
        let keep = seconds(self.config.stable_window_seconds);
        let now = Instant::now();
        let mut revisions = self.revisions.lock().unwrap_or_else(|p| p.into_inner());
        for state in revisions.values_mut() {
            let pool = &state.pool;
            let concurrency = pool.in_flight.load(std::sync::atomic::Ordering::SeqCst)
                + pool.queued.load(std::sync::atomic::Ordering::SeqCst);
            let total = pool.requests_total.load(std::sync::atomic::Ordering::SeqCst);
            state.kpa.record(now, concurrency as f64, total, keep);
        }
    }

    pub async fn reconcile_all(&self, http: &awc::Client) -> Result<(), ControllerError> {
        let services = self
            .store
            .call(|conn| resources::list(conn, STORE_KIND, None))
            .await?;
        let revisions = self
            .store
            .call(|conn| resources::list(conn, REVISION_KIND, None))
            .await?;
        for service in services {
            let own: Vec<Resource> = revisions
                .iter()
                .filter(|r| r.spec["serviceUid"] == json!(service.uid))
                .cloned()
                .collect();
            if let Err(e) = self.reconcile(&service, own, http).await {
                tracing::warn!(service = %format!("{}/{}", service.namespace, service.name), error = %e, "reconcile failed");
            }
        }
        Ok(())
    }

    async fn reconcile(
        &self,
        service: &Resource,
        mut revisions: Vec<Resource>,
        http: &awc::Client,
    ) -> Result<(), ControllerError> {
        let workloads = self.scheduler.list_by_owner(&service.uid).await?;
        if service.deletion_requested_at.is_some() {
            return self.finalize(service, &revisions, &workloads).await;
        }
        let doc = json!({"apiVersion": isvc::API_VERSION, "kind": isvc::KIND, "metadata": service.metadata, "spec": service.spec});
        let parsed = match isvc::validate(&doc, Some(&service.name), &self.runtimes, &self.config) {
            Ok(p) => p,
            Err(e) => {
                let status = json!({"observedGeneration": service.generation, "conditions": [
                    condition("Ready", false, "InvalidSpec", &e.to_string())]});
                self.write_status(&service.uid, status).await?;
                return Ok(());
            }
        };
        let component = parsed.service.predictor.clone();
        let transformer = parsed.service.transformer.clone();
        let hash = hex::encode(Sha256::digest(
            serde_json::to_vec(&(&component, &transformer)).unwrap_or_default(),
        ));
        revisions.sort_by_key(|r| r.spec["number"].as_i64().unwrap_or(0));
        if revisions
            .last()
            .map(|r| r.spec["hash"] != json!(hash))
            .unwrap_or(true)
        {
            let number = revisions
                .last()
                .and_then(|r| r.spec["number"].as_i64())
                .unwrap_or(0)
                .saturating_add(1);
            let new = NewResource {
                kind: REVISION_KIND.into(),
                namespace: service.namespace.clone(),
                name: format!("{}-predictor-{number:05}", service.name),
                metadata: json!({}),
                spec: json!({"serviceUid": service.uid, "number": number, "hash": hash, "generation": service.generation, "component": component, "transformer": transformer}),
                status: json!({"phase": "Pending", "nextSlot": 0, "timeouts": 0}),
            };
            let created = self.store.call(move |conn| resources::create(conn, new)).await;
            match created {
                Ok(r) => revisions.push(r),
                Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let latest = revisions.last().cloned();

        // Observe each revision's replicas: readiness, failures. A revision that can get
        // no traffic without a spec change and has no replica left is not observed: that
        // would make its pool, autoscaler and metric series again.
        let hearth = service.status.get("hearth").cloned().unwrap_or(json!({}));
        let latest_name = latest.as_ref().map(|r| r.name.clone()).unwrap_or_default();
        let before = current_traffic(&service.status);
        for revision in revisions.iter_mut() {
            let kept = [hearth["rolledout"].as_str(), hearth["previous"].as_str()];
            if revision_idle(revision, &workloads, &latest_name, kept, &before) {
                continue;
            }
            self.retired
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&revision.uid);
            self.observe(service, revision, &workloads, http).await?;
        }
        self.prune_ended_replicas(&revisions, &workloads).await?;

        // Traffic.
        let mut rolled = hearth["rolledout"].as_str().map(str::to_string);
        let mut previous = hearth["previous"].as_str().map(str::to_string);
        let phase = |name: &str| {
            revisions
                .iter()
                .find(|r| r.name == name)
                .and_then(|r| r.status["phase"].as_str())
                .unwrap_or("Gone")
                .to_string()
        };
        let latest_phase = phase(&latest_name);
        let latest_ready = revisions
            .iter()
            .rev()
            .find(|r| r.status["phase"] == "Ready")
            .map(|r| r.name.clone());
        let split = split_traffic(
            &latest_name,
            &latest_phase,
            rolled.take(),
            previous.take(),
            parsed.service.canary_percent,
            current_traffic(&service.status),
            &phase,
        );
        let (rolled, previous, traffic) = (split.rolled, split.previous, split.traffic);

        // Scale each revision and route.
        let mut targets = Vec::new();
        let mut internal = Vec::new();
        for revision in &revisions {
            let percent = traffic.iter().find(|(n, _)| *n == revision.name).map(|(_, p)| *p);
            let is_latest = revision.name == latest_name;
            let units = Self::units(revision);
            for unit in &units {
                let desired = self.desired(revision, unit, percent, is_latest);
                self.scale(service, revision, unit, desired, &workloads).await?;
            }
            // Outside traffic goes to the transformer when there is one; the
            // transformer reaches the predictor at /_hearth/{ns}/{revision}.
            let front = units.iter().find(|u| u.transformer).or(units.first());
            if let (Some(p), Some(front)) = (percent, front) {
                if let Some(pool) = self.pool_of(&front.key) {
                    targets.push((pool, p));
                }
            }
            if units.iter().any(|u| u.transformer) {
                if let Some(pool) = self.pool_of(&revision.name) {
                    internal.push(pool);
                }
            }
        }
        let runtime = match &component.workload {
            Spec::Model { runtime, .. } => self.runtimes.get(runtime).cloned(),
            Spec::Custom { .. } => None,
        };
        let cache = targets
            .iter()
            .find(|(_, percent)| *percent > 0)
            .and_then(|(p, _)| self.cache_of(&p.revision, &parsed.service));
        let v2_only = runtime.as_ref().is_some_and(|r| !r.speaks("v1"));
        let binary = runtime.as_ref().is_some_and(|r| r.binary_tensors);
        for pool in internal {
            let revision = pool.revision.clone();
            self.plane.set_internal(
                &service.namespace,
                &revision,
                ServiceRoute {
                    namespace: service.namespace.clone(),
                    name: service.name.clone(),
                    targets: vec![(pool, 100)],
                    runtime_v2_only: v2_only,
                    runtime_binary: binary,
                    timeout: Duration::from_secs(component.timeout_seconds.min(MAX_SECONDS)),
                    cache: None,
                    require_token: false,
                },
            );
        }
        // With a transformer in front, requests reach it as the client sent them.
        let front = transformer.as_ref().unwrap_or(&component);
        self.plane.set_route(ServiceRoute {
            namespace: service.namespace.clone(),
            name: service.name.clone(),
            targets,
            runtime_v2_only: transformer.is_none() && v2_only,
            runtime_binary: transformer.is_none() && binary,
            timeout: Duration::from_secs(front.timeout_seconds.min(MAX_SECONDS)),
            cache,
            require_token: parsed.service.require_token,
        });
        self.retire_idle_revisions(
            &revisions,
            &workloads,
            &latest_name,
            [rolled.as_deref(), previous.as_deref()],
            &traffic,
        )
        .await;

        // Status in KServe's shape.
        let ready = !traffic.is_empty();
        let url = format!(
            "http://{}.{}.{}",
            service.name, service.namespace, self.config.domain
        );
        let failed_latest = latest_phase == "Failed";
        let latest_message = latest
            .as_ref()
            .and_then(|r| r.status["message"].as_str())
            .unwrap_or("");
        // Who may call it: without require-token, any local process (KServe's default).
        let access = if parsed.service.require_token {
            format!(
                "the data plane routes this service; requests need a token (or web login) with access to namespace {}",
                service.namespace
            )
        } else {
            format!(
                "the data plane routes this service; any local process may call it (annotate {}: \"true\" to require a token)",
                crate::serving::isvc::AUTH_ANNOTATION
            )
        };
        let mut conditions = vec![
            condition("IngressReady", true, "Routed", &access),
            condition(
                "PredictorReady",
                ready,
                if ready {
                    "RevisionReady"
                } else if failed_latest {
                    "RevisionFailed"
                } else {
                    "RevisionPending"
                },
                // A pending revision's message says what it waits for (a fetch
                // being retried, say); a failed one's why it failed.
                if ready && !failed_latest {
                    ""
                } else {
                    latest_message
                },
            ),
            condition("Ready", ready, if ready { "Ready" } else { "NotReady" }, ""),
        ];
        if failed_latest && ready {
            conditions.push(condition(
                "LatestDeploymentReady",
                false,
                "RevisionFailed",
                latest_message,
            ));
        }
        let status = json!({
            "observedGeneration": service.generation,
            "url": url,
            "address": {"url": format!("http://{}", self.plane_address())},
            "conditions": conditions,
            "modelStatus": {"states": {"activeModelState": if ready { "Loaded" } else { "Pending" }, "targetModelState": if failed_latest { "FailedToLoad" } else { "Loaded" }}},
            "components": {"predictor": {
                "url": url,
                "latestCreatedRevision": latest_name,
                "latestReadyRevision": latest_ready,
                "latestRolledoutRevision": rolled,
                "previousRolledoutRevision": previous,
                "traffic": traffic.iter().map(|(n, p)| json!({
                    "revisionName": n, "percent": p, "latestRevision": *n == latest_name,
                    "tag": if *n == latest_name { "latest" } else { "prev" }})).collect::<Vec<_>>(),
            }},
            "hearth": {"rolledout": rolled, "previous": previous},
        });
        if status_changed(&service.status, &status) {
            self.write_status(&service.uid, status).await?;
        }
        Ok(())
    }

    /// Where clients reach the data plane (send `Host: {url host}` there).
    fn plane_address(&self) -> String {
        self.plane
            .address()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "127.0.0.1".into())
    }

    async fn write_status(&self, uid: &str, status: Value) -> Result<(), ControllerError> {
        let uid = uid.to_string();
        self.store
            .call(move |conn| resources::update_status(conn, &uid, &status, None))
            .await?;
        Ok(())
    }

    fn pool_of(&self, revision: &str) -> Option<Arc<RevisionPool>> {
        self.revisions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(revision)
            .map(|s| Arc::clone(&s.pool))
    }

    fn cache_of(&self, revision: &str, spec: &isvc::ServiceSpec) -> Option<Arc<ResponseCache>> {
        let wanted = spec.cache.as_ref()?;
        let mut revisions = self.revisions.lock().unwrap_or_else(|p| p.into_inner());
        let state = revisions.get_mut(revision)?;
        Some(Arc::clone(state.cache.get_or_insert_with(|| {
            Arc::new(ResponseCache::new(
                Duration::from_secs(wanted.ttl_seconds.min(MAX_SECONDS)),
                wanted.max_entries,
            ))
        })))
    }

    /// The revision's predictor as stored, within today's bounds.
    fn component_of(revision: &Resource) -> Option<Component> {
        serde_json::from_value(revision.spec["component"].clone())
            .ok()
            .map(Component::within_bounds)
    }

    /// What runs for a revision: the predictor and, when set, the transformer, each
    /// with its own pool (key), replicas and autoscaler.
    fn units(revision: &Resource) -> Vec<Unit> {
        let mut units = Vec::new();
        if let Some(c) = Self::component_of(revision) {
            units.push(Unit {
                key: revision.name.clone(),
                component: c,
                transformer: false,
            });
        }
        if let Ok(Some(c)) = serde_json::from_value::<Option<Component>>(revision.spec["transformer"].clone())
        {
            units.push(Unit {
                key: format!("{}/transformer", revision.name),
                component: c.within_bounds(),
                transformer: true,
            });
        }
        units
    }

    /// Replicas the revision should have now.
    fn desired(&self, revision: &Resource, unit: &Unit, percent: Option<u32>, is_latest: bool) -> u32 {
        let component = &unit.component;
        let phase = revision.status["phase"].as_str().unwrap_or("");
        if phase == "Failed" {
            return 0;
        }
        let mut revisions = self.revisions.lock().unwrap_or_else(|p| p.into_inner());
        let Some(state) = revisions.get_mut(&unit.key) else {
            return 0;
        };
        let labels = RevisionLabels {
            namespace: revision.namespace.clone(),
            service: revision
                .name
                .rsplit_once("-predictor-")
                .map(|(s, _)| s.to_string())
                .unwrap_or_default(),
            revision: unit.key.clone(),
        };
        let desired = match percent {
            Some(p) if p > 0 => {
                let decision = state.kpa.decide(
                    Instant::now(),
                    &component.scaling,
                    state.pool.serving() as u32,
                    &kpa_config(&self.config),
                    state.pool.last_request(),
                    state.created,
                );
                decision.desired
            }
            // A new revision proves itself with one replica before it gets traffic.
            _ if is_latest && phase != "Ready" => 1,
            _ if is_latest => component.scaling.min_replicas,
            _ => 0,
        };
        self.plane
            .metrics
            .replicas_desired
            .get_or_create(&labels)
            .set(desired as i64);
        self.plane
            .metrics
            .replicas_ready
            .get_or_create(&labels)
            .set(state.pool.serving() as i64);
        desired
    }

    async fn observe(
        &self,
        service: &Resource,
        revision: &mut Resource,
        workloads: &[WorkloadRecord],
        http: &awc::Client,
    ) -> Result<(), ControllerError> {
        let mut timeouts = revision.status["timeouts"].as_u64().unwrap_or(0);
        let mut failures = 0;
        let mut last_failure = String::new();
        let mut all_ready = true;
        let mut any_new = false;
        for unit in Self::units(revision) {
            let component = unit.component.clone();
            let pool = {
                let mut revisions = self.revisions.lock().unwrap_or_else(|p| p.into_inner());
                let state = revisions.entry(unit.key.clone()).or_insert_with(|| RevState {
                    pool: RevisionPool::new(
                        &revision.name,
                        component.scaling.container_concurrency as usize,
                        Arc::clone(&self.wake),
                        self.plane
                            .metrics
                            .for_revision(&service.namespace, &service.name, &revision.name),
                    ),
                    kpa: Kpa::default(),
                    created: Instant::now(),
                    cache: None,
                });
                state
                    .pool
                    .set_container_concurrency(component.scaling.container_concurrency as usize);
                Arc::clone(&state.pool)
            };
            let mine: Vec<&WorkloadRecord> = workloads
                .iter()
                .filter(|w| w.workload.labels.get(REVISION_LABEL) == Some(&unit.key))
                .collect();
            let mut became_ready = false;
            for w in &mine {
                let port: u16 = w
                    .workload
                    .labels
                    .get(PORT_LABEL)
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                match w.phase {
                    WorkloadPhase::Running => {
                        // A replica being drained or stopped may still answer its probe
                        // while it shuts down; it must not come back into the pool.
                        let leaving = self
                            .stopped
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .contains(&w.id)
                            || self
                                .draining
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .contains(&w.id);
                        if leaving || pool.replica_ids().contains(&w.id) {
                            self.unready
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .remove(&w.id);
                            continue;
                        }
                        let addr = SocketAddr::from(([127, 0, 0, 1], port));
                        if self.probe(http, addr, &component, &service.name).await {
                            pool.add_ready(&w.id, addr);
                            self.starting_for.forget(&w.id);
                            self.unready
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .remove(&w.id);
                            became_ready = true;
                        } else if started_long_ago(
                            &self.starting_for,
                            w,
                            self.config.readiness_timeout_seconds,
                        ) {
                            self.starting_for.forget(&w.id);
                            self.unready
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .remove(&w.id);
                            tracing::warn!(replica = %w.id, "not ready within the readiness timeout; stopping it");
                            self.stop(&w.id).await?;
                            timeouts = timeouts.saturating_add(1);
                            last_failure = format!(
                                "replica {} was not ready within {} s",
                                w.id, self.config.readiness_timeout_seconds
                            );
                        } else {
                            self.unready.lock().unwrap_or_else(|p| p.into_inner()).insert(
                                w.id.clone(),
                                Unready {
                                    pool: Arc::clone(&pool),
                                    addr,
                                    component: component.clone(),
                                    model: service.name.clone(),
                                },
                            );
                        }
                    }
                    WorkloadPhase::Queued | WorkloadPhase::Starting => {}
                    WorkloadPhase::Failed | WorkloadPhase::Succeeded | WorkloadPhase::Stopped => {
                        pool.remove(&w.id);
                        self.starting_for.forget(&w.id);
                        self.unready
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&w.id);
                        let ours = self
                            .stopped
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .contains(&w.id);
                        if !ours {
                            failures += 1;
                            let exit = w
                                .exit
                                .as_ref()
                                .map(|e| format!("{} (exit code {:?}) {}", e.reason, e.exit_code, e.message))
                                .unwrap_or_default();
                            last_failure = format!(
                                "replica {} exited before it was ready: {exit}; log: {}",
                                w.id,
                                self.log_tail(&w.id).await
                            );
                        }
                    }
                }
            }
            any_new |= became_ready;
            all_ready &= pool.serving() > 0;
        }
        failures = timeouts.saturating_add(failures);
        let phase = revision.status["phase"].as_str().unwrap_or("Pending").to_string();
        let mut status = revision.status.clone();
        // Ready once every unit (predictor, transformer) has had a ready replica.
        if phase == "Pending" && any_new && all_ready {
            status["phase"] = json!("Ready");
            status["readyAt"] = json!(now());
        } else if phase == "Pending" && failures >= self.config.revision_failure_limit as u64 {
            status["phase"] = json!("Failed");
            status["message"] = json!(last_failure);
            for w in workloads {
                let key = w.workload.labels.get(REVISION_LABEL).cloned().unwrap_or_default();
                if w.phase.is_active()
                    && (key == revision.name || key.starts_with(&format!("{}/", revision.name)))
                {
                    self.stop(&w.id).await?;
                }
            }
        }
        status["timeouts"] = json!(timeouts);
        if status != revision.status {
            let uid = revision.uid.clone();
            let s = status.clone();
            self.store
                .call(move |conn| resources::update_status(conn, &uid, &s, None))
                .await?;
            revision.status = status;
        }
        Ok(())
    }

    /// The last lines of a replica's log that mention an error, for status messages.
    async fn log_tail(&self, id: &str) -> String {
        let Ok(files) = self.scheduler.log_files(id).await else {
            return String::new();
        };
        let Some(last) = files.last().cloned() else {
            return String::new();
        };
        let text = tokio::task::spawn_blocking(move || std::fs::read(last).unwrap_or_default())
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("rror") || l.contains("xception"))
            .collect();
        let pick = if lines.is_empty() {
            text.lines().rev().take(2).collect::<Vec<_>>()
        } else {
            lines.into_iter().rev().take(2).collect()
        };
        pick.into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(" | ")
            .chars()
            .take(600)
            .collect()
    }

    async fn stop(&self, id: &str) -> Result<(), ControllerError> {
        self.stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string());
        self.scheduler.stop(id).await?;
        Ok(())
    }

    async fn probe(&self, http: &awc::Client, addr: SocketAddr, component: &Component, model: &str) -> bool {
        let path = match &component.workload {
            Spec::Model { runtime, .. } => self
                .runtimes
                .get(runtime)
                .map(|r| r.readiness_path.replace("{model_name}", model))
                .unwrap_or_else(|| "/".into()),
            Spec::Custom { .. } => {
                if !self.scheduler.runtime().capabilities().runs_images {
                    return tokio::net::TcpStream::connect(addr).await.is_ok();
                }
                // Any HTTP answer means the server listens. A connection alone does
                // not: Docker's port proxy accepts before the container's server is up.
                return http.get(format!("http://{addr}/")).send().await.is_ok();
            }
        };
        match http.get(format!("http://{addr}{path}")).send().await {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }

    /// Starts or drains replicas of one revision towards `desired`.
    async fn scale(
        &self,
        service: &Resource,
        revision: &Resource,
        unit: &Unit,
        desired: u32,
        workloads: &[WorkloadRecord],
    ) -> Result<(), ControllerError> {
        let Some(pool) = self.pool_of(&unit.key) else {
            return Ok(());
        };
        let active: Vec<&WorkloadRecord> = workloads
            .iter()
            .filter(|w| w.workload.labels.get(REVISION_LABEL) == Some(&unit.key) && w.phase.is_active())
            .collect();
        // Finish drains: stop replicas whose last request is done.
        let draining: Vec<String> = {
            let d = self.draining.lock().unwrap_or_else(|p| p.into_inner());
            active
                .iter()
                .filter(|w| d.contains(&w.id))
                .map(|w| w.id.clone())
                .collect()
        };
        for id in &draining {
            if pool.drain(id) == 0 {
                pool.remove(id);
                self.stop(id).await?;
                self.draining.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
            }
        }
        let live: Vec<&&WorkloadRecord> = active.iter().filter(|w| !draining.contains(&w.id)).collect();
        let count = live.len() as u32;
        if count < desired {
            if revision.status["phase"] == "Failed" {
                return Ok(());
            }
            let model_dir = match self.model_dir(revision, &unit.component) {
                ModelDir::Ready(dir) if revision.status.get("fetchRetryAt").is_some() => {
                    // Fetched after earlier failures: their message no longer holds.
                    let mut status = revision.status.clone();
                    if let Some(o) = status.as_object_mut() {
                        o.remove("fetchRetryAt");
                        o.remove("message");
                    }
                    let uid = revision.uid.clone();
                    self.store
                        .call(move |conn| resources::update_status(conn, &uid, &status, None))
                        .await?;
                    dir
                }
                ModelDir::Ready(dir) => dir,
                ModelDir::Fetching => return Ok(()),
                ModelDir::Failed(failure) => {
                    let uid = revision.uid.clone();
                    let mut status = revision.status.clone();
                    let age = created_seconds_ago(revision);
                    if failure.transient && age < self.config.readiness_timeout_seconds {
                        // As KServe's storage initializer is restarted with a backoff
                        // until the revision's deadline: the store or network may be
                        // back in a moment (a MinIO that starts after Hearth at boot).
                        let attempts = status["fetchAttempts"].as_u64().unwrap_or(0).saturating_add(1);
                        let backoff = FETCH_BACKOFF_BASE_SECONDS * 2f64.powi(attempts.min(6) as i32 - 1);
                        status["fetchAttempts"] = json!(attempts);
                        status["fetchRetryAt"] = json!(now_plus(backoff));
                        status["message"] =
                            json!(format!("{}; trying again in {backoff:.0} s", failure.message));
                    } else {
                        status["phase"] = json!("Failed");
                        status["message"] = json!(failure.message);
                    }
                    self.store
                        .call(move |conn| resources::update_status(conn, &uid, &status, None))
                        .await?;
                    return Ok(());
                }
            };
            for _ in count..desired {
                self.start_replica(service, revision, unit, &model_dir).await?;
            }
        } else if count > desired {
            // Not-yet-ready replicas go first, then the least busy.
            let ready = pool.replica_ids();
            let mut order: Vec<&&&WorkloadRecord> = live.iter().collect();
            order.sort_by_key(|w| ready.contains(&w.id));
            for w in order.into_iter().take((count - desired) as usize) {
                self.draining
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(w.id.clone());
                if pool.drain(&w.id) == 0 {
                    pool.remove(&w.id);
                    self.stop(&w.id).await?;
                    self.draining
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&w.id);
                }
            }
        }
        Ok(())
    }

    /// The revision's model directory once its files are in the cache. A fetch runs
    /// in its own task: a large download must not hold up scaling and routing of every
    /// other service while it lasts.
    fn model_dir(&self, revision: &Resource, component: &Component) -> ModelDir {
        let dir = self.data_dir.join("serving/models").join(&revision.uid);
        let storage = match &component.workload {
            Spec::Model { storage, .. } => Some(storage.clone()),
            Spec::Custom { storage, .. } => storage.clone(),
        };
        let Some(storage) = storage else {
            return ModelDir::Ready(dir);
        };
        if dir.join(".complete").exists() {
            return ModelDir::Ready(dir);
        }
        let mut fetches = self.fetches.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(running) = fetches.get(&revision.uid) {
            if !running.is_finished() {
                return ModelDir::Fetching;
            }
            // Polled in place and `unconstrained`: a finished task can still answer
            // Pending when this thread's cooperative budget is spent, and dropping its
            // handle then would lose the outcome (and the backoff it records).
            let polled = fetches
                .get_mut(&revision.uid)
                .and_then(|handle| futures_util::FutureExt::now_or_never(tokio::task::unconstrained(handle)));
            let Some(joined) = polled else {
                return ModelDir::Fetching;
            };
            fetches.remove(&revision.uid);
            return match joined.unwrap_or_else(|e| Err(format!("the fetch task failed: {e}").into())) {
                Ok(dir) => ModelDir::Ready(dir),
                Err(failure) => ModelDir::Failed(failure),
            };
        }
        if fetch_backoff_left(&revision.status).is_some() {
            return ModelDir::Fetching;
        }
        let (data_dir, config, uid, wake, namespace) = (
            self.data_dir.clone(),
            Arc::clone(&self.config),
            revision.uid.clone(),
            Arc::clone(&self.wake),
            revision.namespace.clone(),
        );
        // On this (the controller's) thread: the storage client is awc.
        let task = actix_web::rt::spawn(async move {
            let outcome = fetch_model(data_dir, config, uid, storage, namespace).await;
            wake.notify_one();
            outcome
        });
        fetches.insert(revision.uid.clone(), task);
        ModelDir::Fetching
    }

    /// Ended replicas (rows, logs, working directories) beyond the newest
    /// `ended_replicas_kept` of the service go, once their revision has settled: a
    /// pending revision still counts its failed replicas.
    async fn prune_ended_replicas(
        &self,
        revisions: &[Resource],
        workloads: &[WorkloadRecord],
    ) -> Result<(), ControllerError> {
        let settled = |w: &WorkloadRecord| {
            let key = w
                .workload
                .labels
                .get(REVISION_LABEL)
                .map(String::as_str)
                .unwrap_or("");
            let revision = key.strip_suffix("/transformer").unwrap_or(key);
            revisions
                .iter()
                .find(|r| r.name == revision)
                .is_none_or(|r| matches!(r.status["phase"].as_str(), Some("Ready" | "Failed")))
        };
        let ended: Vec<&WorkloadRecord> = workloads.iter().filter(|w| w.phase.is_final()).collect();
        let excess = ended.len().saturating_sub(self.config.ended_replicas_kept);
        // `workloads` is in submission order: the oldest come first.
        for w in ended.into_iter().take(excess).filter(|w| settled(w)) {
            self.scheduler.purge(&w.id).await?;
            self.stopped
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&w.id);
            let _ = tokio::fs::remove_dir_all(self.data_dir.join("serving/replicas").join(&w.id)).await;
        }
        Ok(())
    }

    /// Revisions that can get no traffic without a spec change (not the latest, not
    /// rolled out now or before, no replica left) give back what they hold: their model
    /// cache on disk (on a workstation every edit of a service would otherwise keep
    /// another copy of the model), and their pool, autoscaler, response cache, internal
    /// route and metric series in memory. Such a revision that comes back fetches its
    /// model again and starts afresh.
    async fn retire_idle_revisions(
        &self,
        revisions: &[Resource],
        workloads: &[WorkloadRecord],
        latest: &str,
        kept: [Option<&str>; 2],
        traffic: &[(String, u32)],
    ) {
        for revision in revisions {
            if !revision_idle(revision, workloads, latest, kept, traffic)
                || !self
                    .retired
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(revision.uid.clone())
            {
                continue;
            }
            self.forget_revision(revision);
            let dir = self.data_dir.join("serving/models").join(&revision.uid);
            let name = revision.name.clone();
            // Off the controller's thread, which the API and the watchdog share: a large
            // model tree takes seconds to unlink.
            let removed = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            })
            .await;
            match removed {
                Ok(Ok(true)) => {
                    tracing::info!(revision = %name, "removed the model cache of an idle revision")
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(revision = %name, error = %e, "removing an idle revision's model cache")
                }
                Err(e) => {
                    tracing::warn!(revision = %name, error = %e, "removing an idle revision's model cache")
                }
            }
        }
    }

    /// Drops a revision's in-memory state: pools and autoscalers of its units, their
    /// metric series, its internal route and a fetch still under way.
    fn forget_revision(&self, revision: &Resource) {
        let keys = [revision.name.clone(), format!("{}/transformer", revision.name)];
        let states: Vec<RevState> = {
            let mut map = self.revisions.lock().unwrap_or_else(|p| p.into_inner());
            keys.iter().filter_map(|k| map.remove(k)).collect()
        };
        let service = revision
            .name
            .rsplit_once("-predictor-")
            .map(|(s, _)| s.to_string())
            .unwrap_or_default();
        for (state, key) in states.iter().zip(keys.iter()) {
            self.plane.metrics.forget_revision(&state.pool.metrics.labels);
            self.plane.metrics.forget_revision(&RevisionLabels {
                namespace: revision.namespace.clone(),
                service: service.clone(),
                revision: key.clone(),
            });
        }
        if !states.is_empty() {
            self.plane.remove_internal(&revision.namespace, &revision.name);
        }
        if let Some(fetch) = self
            .fetches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&revision.uid)
        {
            fetch.abort();
        }
    }

    async fn start_replica(
        &self,
        service: &Resource,
        revision: &Resource,
        unit: &Unit,
        model_dir: &Path,
    ) -> Result<(), ControllerError> {
        let component = &unit.component;
        // The slot is persisted before the submit: a crash in between leaves a gap in
        // the numbering, never a second replica under one id.
        let slot = revision.status["nextSlot"].as_u64().unwrap_or(0);
        let (uid, name) = (revision.uid.clone(), revision.name.clone());
        let namespace = revision.namespace.clone();
        let current = self
            .store
            .call(move |conn| resources::get(conn, REVISION_KIND, &namespace, &name))
            .await?;
        let slot = slot.max(current.status["nextSlot"].as_u64().unwrap_or(0));
        let mut status = current.status.clone();
        status["nextSlot"] = json!(slot.saturating_add(1));
        self.store
            .call(move |conn| resources::update_status(conn, &uid, &status, None))
            .await?;

        let id = format!(
            "{}-{}{slot}",
            revision.uid,
            if unit.transformer { "t" } else { "" }
        );
        let port = free_port()?;
        let work_dir = self.data_dir.join("serving/replicas").join(&id);
        tokio::fs::create_dir_all(&work_dir).await?;
        // The replica runs as its namespace's user: its directory is handed over to it,
        // on the blocking pool (a namespace's first replica may create its Unix user).
        let (namespace, base, dir) = (
            service.namespace.clone(),
            self.data_dir.join("serving/replicas"),
            work_dir.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let identities = crate::runtime::identity::global();
            match identities.for_workload(&namespace, None) {
                Ok(run_as) => identities.hand_over(&run_as, &base, &dir),
                Err(_) => Ok(()),
            }
        })
        .await
        .map_err(std::io::Error::other)??;
        let vars: BTreeMap<&str, String> = [
            ("{model_name}", service.name.clone()),
            ("{model_dir}", model_dir.display().to_string()),
            ("{port}", port.to_string()),
            ("{work_dir}", work_dir.display().to_string()),
        ]
        .into_iter()
        .collect();
        let fill = |s: &str, extra: &[(&str, String)]| {
            let mut out = s.to_string();
            for (k, v) in vars
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .chain(extra.iter().cloned())
            {
                out = out.replace(k, &v);
            }
            out
        };
        let (command, env, image) = match &component.workload {
            Spec::Model {
                runtime,
                format,
                args,
                env,
                runtime_version,
                ..
            } => {
                let Some(rt) = self.runtimes.get(runtime) else {
                    return Ok(());
                };
                let extra = [(
                    "{implementation}",
                    rt.implementation(format).unwrap_or("").to_string(),
                )];
                let mut command: Vec<String> = rt.command.iter().map(|c| fill(c, &extra)).collect();
                command.extend(args.iter().map(|a| fill(a, &extra)));
                let mut all_env: Vec<(String, String)> =
                    rt.env.iter().map(|(k, v)| (k.clone(), fill(v, &extra))).collect();
                all_env.extend(env.iter().cloned());
                (command, all_env, runtime_version.clone())
            }
            Spec::Custom {
                command, env, image, ..
            } => {
                let mut all_env = env.clone();
                all_env.push(("PORT".into(), port.to_string()));
                all_env.push(("MODEL_DIR".into(), model_dir.display().to_string()));
                let mut command: Vec<String> = command.iter().map(|c| fill(c, &[])).collect();
                if unit.transformer {
                    // What KServe passes a transformer container: the model name, where the
                    // predictor is (here a data-plane path prefix for this revision's
                    // predictor) and the port to listen on.
                    let predictor = format!(
                        "{}/_hearth/{}/{}",
                        self.plane.address().map(|a| a.to_string()).unwrap_or_default(),
                        revision.namespace,
                        revision.name
                    );
                    all_env.push(("PREDICTOR_HOST".into(), predictor.clone()));
                    for (flag, value) in [
                        ("--model_name", service.name.clone()),
                        ("--predictor_host", predictor),
                        ("--http_port", port.to_string()),
                    ] {
                        if !command
                            .iter()
                            .any(|c| c == flag || c.starts_with(&format!("{flag}=")))
                        {
                            command.push(flag.to_string());
                            command.push(value);
                        }
                    }
                }
                (command, all_env, image.clone())
            }
        };
        let workload = Workload {
            id: id.clone(),
            owner: Owner {
                kind: STORE_KIND.into(),
                namespace: service.namespace.clone(),
                name: service.name.clone(),
                uid: service.uid.clone(),
            },
            labels: [
                (REVISION_LABEL.to_string(), unit.key.clone()),
                (PORT_LABEL.to_string(), port.to_string()),
            ]
            .into_iter()
            .collect(),
            image,
            command,
            env,
            mounts: replica_mounts(&work_dir, model_dir),
            working_dir: Some(work_dir),
            ports: vec![port],
            resources: ResourceRequest {
                cpu_millis: component.resources.cpu_millis,
                memory_bytes: component.resources.memory_bytes,
                gpus: component.resources.gpus,
            },
            gpu_uuids: Vec::new(),
            active_deadline_seconds: None,
            termination_grace_seconds: 10,
            security_context: None,
        };
        tracing::info!(replica = %id, revision = %revision.name, port, "starting a replica");
        self.scheduler
            .submit(WorkloadRequest {
                workload,
                priority: PriorityClass::Serving,
            })
            .await?;
        Ok(())
    }

    /// Deletion: drain and stop every replica, then remove revisions and the service.
    async fn finalize(
        &self,
        service: &Resource,
        revisions: &[Resource],
        workloads: &[WorkloadRecord],
    ) -> Result<(), ControllerError> {
        self.plane.remove_route(&service.namespace, &service.name);
        let mut active = false;
        for w in workloads.iter().filter(|w| w.phase.is_active()) {
            active = true;
            self.stop(&w.id).await?;
        }
        if active {
            return Ok(());
        }
        // The workloads themselves go with the next garbage collection (their owner is
        // gone then); their working directories are the controller's own.
        for w in workloads {
            let _ = tokio::fs::remove_dir_all(self.data_dir.join("serving/replicas").join(&w.id)).await;
        }
        {
            let mut stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
            let mut draining = self.draining.lock().unwrap_or_else(|p| p.into_inner());
            let mut unready = self.unready.lock().unwrap_or_else(|p| p.into_inner());
            for w in workloads {
                stopped.remove(&w.id);
                draining.remove(&w.id);
                unready.remove(&w.id);
            }
        }
        self.plane
            .metrics
            .forget_service(&service.namespace, &service.name);
        for revision in revisions {
            // Also aborts a download under way, which would write its files after the
            // revision is gone.
            self.forget_revision(revision);
            self.retired
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&revision.uid);
            let uid = revision.uid.clone();
            self.store.call(move |conn| resources::delete(conn, &uid)).await?;
            let models = self.data_dir.join("serving/models");
            let (dir, partial) = (
                models.join(&revision.uid),
                models.join(format!("{}.partial", revision.uid)),
            );
            let _ = tokio::task::spawn_blocking(move || {
                let _ = std::fs::remove_dir_all(dir);
                let _ = std::fs::remove_dir_all(partial);
            })
            .await;
        }
        let uid = service.uid.clone();
        self.store.call(move |conn| resources::delete(conn, &uid)).await?;
        Ok(())
    }
}

/// Whether a revision can get no traffic without a spec change and has no replica
/// left: not the latest, not one of `kept` (rolled out now or before), not in
/// `traffic`, no active workload.
fn revision_idle(
    revision: &Resource,
    workloads: &[WorkloadRecord],
    latest: &str,
    kept: [Option<&str>; 2],
    traffic: &[(String, u32)],
) -> bool {
    let name = revision.name.as_str();
    if name == latest || kept.contains(&Some(name)) || traffic.iter().any(|(n, _)| n == name) {
        return false;
    }
    let transformer = format!("{name}/transformer");
    !workloads.iter().any(|w| {
        w.phase.is_active()
            && w.workload
                .labels
                .get(REVISION_LABEL)
                .is_some_and(|key| *key == name || *key == transformer)
    })
}

/// The split written in the last status.
fn current_traffic(status: &Value) -> Vec<(String, u32)> {
    status["components"]["predictor"]["traffic"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|t| {
                    Some((
                        t["revisionName"].as_str()?.to_string(),
                        t["percent"].as_u64()? as u32,
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Debug, PartialEq)]
pub struct Split {
    pub rolled: Option<String>,
    pub previous: Option<String>,
    /// (revision, percent), percents adding up to 100; empty: nothing routable.
    pub traffic: Vec<(String, u32)>,
}

/// KServe's rollout rules. The latest revision, once ready, is rolled out unless a
/// canary percentage is set, in which case it gets that share and the rolled-out one
/// the rest. A canary percentage on an already rolled-out latest splits with the
/// previous rolled-out revision (0 = rollback, the latest listed at 0 %). A latest
/// revision that is not ready, or failed, leaves traffic where it was.
pub fn split_traffic(
    latest: &str,
    latest_phase: &str,
    mut rolled: Option<String>,
    mut previous: Option<String>,
    canary: Option<u8>,
    current: Vec<(String, u32)>,
    phase: &dyn Fn(&str) -> String,
) -> Split {
    if rolled.is_none() && latest_phase == "Ready" {
        rolled = Some(latest.to_string());
    }
    // Until the latest revision is ready, the split stays what it was (after a
    // rollback that is the previous revision, not the rolled-out one).
    if latest_phase != "Ready" && !current.is_empty() && current.iter().all(|(n, _)| phase(n) == "Ready") {
        return Split {
            rolled,
            previous,
            traffic: current,
        };
    }
    if canary.is_none() && latest_phase == "Ready" && rolled.as_deref() != Some(latest) {
        previous = rolled.take();
        rolled = Some(latest.to_string());
    }
    let mut traffic: Vec<(String, u32)> = Vec::new();
    match (&rolled, canary) {
        (Some(r), Some(p)) if r != latest && latest_phase == "Ready" => {
            traffic.push((latest.to_string(), p as u32));
            traffic.push((r.clone(), 100 - p as u32));
        }
        (Some(r), Some(p))
            if r == latest && previous.as_deref().is_some_and(|prev| phase(prev) == "Ready") =>
        {
            traffic.push((latest.to_string(), p as u32));
            traffic.push((previous.clone().unwrap_or_default(), 100 - p as u32));
        }
        (Some(r), _) => traffic.push((r.clone(), 100)),
        (None, _) => {}
    }
    // A revision at 0 % stays listed, as KServe's status lists the latest revision
    // after a rollback (`canaryTrafficPercent: 0`): its traffic target is kept, with
    // `latestRevision: true` and `percent: 0`; the data plane never picks it.
    Split {
        rolled,
        previous,
        traffic,
    }
}

/// Where a revision's model stands.
enum ModelDir {
    Ready(PathBuf),
    Fetching,
    Failed(FetchFailure),
}

/// Why a model could not be fetched, and whether trying again may help.
#[derive(Debug)]
struct FetchFailure {
    transient: bool,
    message: String,
}

impl From<String> for FetchFailure {
    fn from(message: String) -> FetchFailure {
        FetchFailure {
            transient: false,
            message,
        }
    }
}

/// First delay before a revision's model is fetched again after a transient
/// failure; it doubles up to 64 times this.
const FETCH_BACKOFF_BASE_SECONDS: f64 = 2.0;

/// How long until a revision may fetch again, while its backoff runs: never more than
/// the longest backoff, so a wall clock stepped back does not hold the fetch back.
fn fetch_backoff_left(status: &Value) -> Option<Duration> {
    let at = chrono::DateTime::parse_from_rfc3339(status["fetchRetryAt"].as_str()?).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
        .map(|left| left.min(seconds(FETCH_BACKOFF_BASE_SECONDS * 32.0)))
}

fn created_seconds_ago(resource: &Resource) -> f64 {
    chrono::DateTime::parse_from_rfc3339(&resource.created_at)
        .map(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_milliseconds() as f64 / 1000.0)
        .unwrap_or(0.0)
}

fn now_plus(span: f64) -> String {
    let now = chrono::Utc::now();
    chrono::TimeDelta::from_std(seconds(span))
        .ok()
        .and_then(|delta| now.checked_add_signed(delta))
        .unwrap_or(now)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Model files into `<data dir>/serving/models/<revision uid>` (`dir`), from `storage`.
async fn fetch_model(
    data_dir: PathBuf,
    config: Arc<ServingConfig>,
    revision_uid: String,
    storage: Storage,
    namespace: String,
) -> Result<PathBuf, FetchFailure> {
    let models = data_dir.join("serving/models");
    let dir = models.join(&revision_uid);
    let tmp = models.join(format!("{revision_uid}.partial"));
    // Filesystem work runs on the blocking pool: this task shares the controller's
    // thread, and a leftover partial tree can be large.
    let fresh = tmp.clone();
    tokio::task::spawn_blocking(move || {
        let _ = std::fs::remove_dir_all(&fresh);
        std::fs::create_dir_all(&fresh).map_err(|e| format!("creating {}: {e}", fresh.display()))
    })
    .await
    .map_err(|e| e.to_string())??;
    // The cache belongs to the namespace's user: its replicas read it, no one else can.
    // On the blocking pool: a namespace's first fetch may create its Unix user.
    let identities = crate::runtime::identity::global();
    let (partial, cache) = (tmp.clone(), models.clone());
    let run_as = tokio::task::spawn_blocking(move || {
        let run_as = identities
            .for_workload(&namespace, None)
            .map_err(|e| e.to_string())?;
        identities
            .hand_over(&run_as, &cache, &partial)
            .map_err(|e| format!("creating {}: {e}", partial.display()))?;
        Ok::<_, String>(run_as)
    })
    .await
    .map_err(|e| e.to_string())??;
    match &storage {
        Storage::File { path } => {
            let from = PathBuf::from(path);
            if ["/", "/proc", "/sys", "/dev"]
                .iter()
                .any(|p| from == Path::new(p) || from.starts_with(format!("{p}/")) && *p != "/")
            {
                return Err(format!("storageUri: {path} is not a model directory").into());
            }
            let tmp = tmp.clone();
            // Read as the namespace's user (never with the daemon's rights on its
            // behalf), off the controller's thread: a large copy must not stall routing.
            let copy = move || -> Result<(), String> {
                let from_text = from.display().to_string();
                std::fs::metadata(&from).map_err(|e| format!("storageUri: {from_text}: {e}"))?;
                let target = if from.is_dir() {
                    tmp.clone()
                } else {
                    tmp.join(from.file_name().unwrap_or_default())
                };
                copy_tree(&from, &target, &mut (0, 0))
            };
            tokio::task::spawn_blocking(move || crate::runtime::identity::as_user(&run_as, copy))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("copying {path}: {e}"))?;
        }
        Storage::Http { .. } | Storage::S3 { .. } | Storage::Gcs { .. } => {
            super::fetch::fetch(&storage, &config, &tmp)
                .await
                .map_err(|e| FetchFailure {
                    transient: e.transient(),
                    message: e.to_string(),
                })?;
            let (owner, tree) = (run_as.clone(), tmp.clone());
            tokio::task::spawn_blocking(move || identities.hand_over_tree(&owner, &tree))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("caching the model: {e}"))?;
        }
    }
    let cached = dir.clone();
    tokio::task::spawn_blocking(move || {
        std::fs::write(tmp.join(".complete"), b"").map_err(|e| e.to_string())?;
        let _ = std::fs::remove_dir_all(&cached);
        std::fs::rename(&tmp, &cached).map_err(|e| format!("caching the model: {e}"))
    })
    .await
    .map_err(|e| e.to_string())??;
    Ok(dir)
}

/// Whether replica `w` started over `seconds` ago, on the monotonic clock while this
/// process watches it (`clock`), so a wall-clock step stops no replica early.
fn started_long_ago(clock: &crate::clock::SinceClock, w: &WorkloadRecord, seconds: f64) -> bool {
    let Some(started) = w
        .started_at
        .as_deref()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    else {
        return false;
    };
    clock
        .elapsed(&w.id, started.with_timezone(&chrono::Utc))
        .as_secs_f64()
        > seconds
}

/// Status is rewritten only when something but the timestamps changed.
fn status_changed(old: &Value, new: &Value) -> bool {
    fn strip(v: &Value) -> Value {
        match v {
            Value::Object(o) => Value::Object(
                o.iter()
                    .filter(|(k, _)| k.as_str() != "lastTransitionTime")
                    .map(|(k, v)| (k.clone(), strip(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
            other => other.clone(),
        }
    }
    strip(old) != strip(new)
}

/// What a replica in a container must see: its work directory, and its model read-only
/// both where `MODEL_DIR` and `{model_dir}` say (the host path) and at KServe's
/// `/mnt/models`. The process runtime ignores them.
fn replica_mounts(work_dir: &Path, model_dir: &Path) -> Vec<crate::runtime::Mount> {
    use crate::runtime::Mount;
    let mut mounts = vec![Mount {
        source: work_dir.to_path_buf(),
        target: work_dir.to_path_buf(),
        read_only: false,
    }];
    if model_dir.exists() {
        for target in [model_dir, Path::new("/mnt/models")] {
            mounts.push(Mount {
                source: model_dir.to_path_buf(),
                target: target.to_path_buf(),
                read_only: true,
            });
        }
    }
    mounts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(_: &str) -> String {
        "Ready".into()
    }

    fn t(list: &[(&str, u32)]) -> Vec<(String, u32)> {
        list.iter().map(|(n, p)| (n.to_string(), *p)).collect()
    }

    #[test]
    fn rollout_canary_promotion_rollback_and_failure() {
        // First revision ready: rolled out at 100 %.
        let s = split_traffic("r1", "Ready", None, None, None, vec![], &ready);
        assert_eq!((s.rolled.as_deref(), s.traffic), (Some("r1"), t(&[("r1", 100)])));
        // r2 pending: traffic stays on r1.
        let s = split_traffic("r2", "Pending", Some("r1".into()), None, Some(10), vec![], &ready);
        assert_eq!(s.traffic, t(&[("r1", 100)]));
        // r2 ready with a 10 % canary.
        let s = split_traffic("r2", "Ready", Some("r1".into()), None, Some(10), vec![], &ready);
        assert_eq!(s.traffic, t(&[("r2", 10), ("r1", 90)]));
        assert_eq!(s.rolled.as_deref(), Some("r1"));
        // Promotion.
        let s = split_traffic(
            "r2",
            "Ready",
            Some("r1".into()),
            None,
            None,
            t(&[("r2", 10), ("r1", 90)]),
            &ready,
        );
        assert_eq!(
            (s.rolled.as_deref(), s.previous.as_deref()),
            (Some("r2"), Some("r1"))
        );
        assert_eq!(s.traffic, t(&[("r2", 100)]));
        // Rollback: 0 % on the rolled-out latest sends all to the previous one; the
        // latest stays listed at 0 %, as KServe lists it.
        let s = split_traffic(
            "r2",
            "Ready",
            Some("r2".into()),
            Some("r1".into()),
            Some(0),
            vec![],
            &ready,
        );
        assert_eq!(s.traffic, t(&[("r2", 0), ("r1", 100)]));
        // The same before promotion: a canary set to 0 keeps r2 listed.
        let s = split_traffic("r2", "Ready", Some("r1".into()), None, Some(0), vec![], &ready);
        assert_eq!(s.traffic, t(&[("r2", 0), ("r1", 100)]));
        // A failed r3 never gets traffic, canary or not.
        let s = split_traffic(
            "r3",
            "Failed",
            Some("r2".into()),
            Some("r1".into()),
            Some(50),
            vec![],
            &ready,
        );
        assert_eq!(s.traffic, t(&[("r2", 100)]));
        let s = split_traffic(
            "r3",
            "Failed",
            Some("r2".into()),
            Some("r1".into()),
            None,
            vec![],
            &ready,
        );
        assert_eq!(s.traffic, t(&[("r2", 100)]));
        // After a rollback to r1, a pending or failed r3 leaves traffic on r1.
        for phase in ["Pending", "Failed"] {
            let s = split_traffic(
                "r3",
                phase,
                Some("r2".into()),
                Some("r1".into()),
                Some(50),
                t(&[("r1", 100)]),
                &ready,
            );
            assert_eq!(s.traffic, t(&[("r1", 100)]), "{phase}");
        }
        // Nothing ready yet: nothing routable.
        assert!(split_traffic("r1", "Pending", None, None, None, vec![], &ready)
            .traffic
            .is_empty());
    }
}
