//! The Kubernetes backend (`--runtime k3s`, where Hearth supervises k3s, and `runtime =
//! "kube"` for a cluster it does not run): each workload is one Pod, made, watched,
//! logged and deleted through the API server (kube-rs, k8s-openapi's 1.33 types).
//!
//! The cluster holds the state: a pod is named `pod_name(id)` (the workload id made a
//! DNS label, with a hash of the id so that two ids never share a name), in the
//! `[kube] namespace` (`hearth`, made at first connection), labelled
//! `app.kubernetes.io/managed-by=hearth` and `hearth.dev/owner-uid`, and annotated
//! with the whole workload id, its owner and its own labels (label values are limited
//! to 63 characters; annotations are not). A restarted daemon finds each pod by name
//! (`start`, `status`, `wait`) or by label (`list`, the sweep) and adopts it: it is
//! never made twice. What Hearth keeps beside it, in `<data-dir>/workloads/<id>/` as
//! the other backends do: the log (`output.log` and `output.times`, copied from the
//! pod's log with `follow=true&timestamps=true` as it is written, so that every log
//! reader works unchanged and the log outlives the pod), `stop` (why Hearth ended it)
//! and `exit.json` (the end, written before the ended pod is deleted).
//!
//! Mapping (`pod_manifest`): `restartPolicy: Never` for every workload: a job attempt,
//! a pipeline step and a trial run once; a model replica or a notebook that ends is
//! replaced or restarted by its controller (serving's replacement, the notebook
//! backoff), as with the other backends, so the end must be seen, not hidden by the
//! kubelet's restarts. `activeDeadlineSeconds` and `terminationGracePeriodSeconds` are
//! the pod's own. CPU and memory are the container's requests and limits (equal);
//! GPUs are `nvidia.com/gpu` limits with `runtimeClassName: nvidia` and the
//! `nvidia.com/gpu=present:NoSchedule` toleration (`crate::k3s::gpu_rules`), and the
//! device plugin picks the devices (`GpuMode::Delegated`: the UUIDs Hearth's ledger
//! chose are not passed). A pod without GPUs gets `NVIDIA_VISIBLE_DEVICES=void`: with
//! containerd's default runtime `nvidia` (k3s mode) an image's own `=all` would
//! otherwise hand it every GPU. `Workload.mounts` are `hostPath` volumes, and a pod
//! with any is pinned (`nodeSelector` `kubernetes.io/hostname`) to Hearth's own node,
//! the only one where those paths exist. No service-account token and no service
//! environment variables are given to workloads.
//!
//! Ports: callers reach `Workload.ports` at `127.0.0.1:<port>` (the runtime contract).
//! The pod listens on its own IP (`own_network`), and the backend keeps a loopback
//! listener per port that relays each connection to `<pod IP>:<port>`, as Docker's
//! `docker-proxy` does for published ports. So neither `hostNetwork` (a port clash
//! with the host, and pods tied to one node) nor a Service (a cluster IP only
//! kube-proxy's rules reach, and one more object to keep) is needed; the pod IP is
//! reachable from the server node on any node of the cluster (the CNI's routes).
//!
//! When the API server cannot be reached (k3s still starting, the cluster away), or
//! its kubeconfig is not written yet, calls return `RuntimeError::Unavailable`,
//! `probe` records it (`/readyz`), and the scheduler admits nothing meanwhile, exactly
//! as with Docker.

//!
//! `pod` maps a workload to its Pod and reads a pod's status back; `tests` drive the
//! backend against a recorded API server.

pub mod pod;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ::kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams, WatchEvent, WatchParams};
use ::kube::Client;
use futures_util::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::log_times::{split_timestamp, LogWriter, TIMES, TIMES_ROTATED};
use super::shim::{write_atomic, LOG, LOG_ROTATED, STOP};
use super::workdir::{io_err, log_files, read_exit, write_exit};
use super::{
    Availability, Capabilities, ExitInfo, GpuMode, LogFiles, RunState, Runtime, RuntimeError, Workload,
};
use pod::{
    annotation, ended, exit_from, label_value, pod_ip, pod_ports, started_at, ANNOTATION_OWNER_UID,
    ANNOTATION_WORKLOAD, CONTAINER, LABEL_MANAGED_BY, LABEL_OWNER_UID, RUNTIME_CLASS,
};
pub use pod::{pod_manifest, pod_name, valid_namespace, PodUser};

/// `[kube]` in the config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubeConfig {
    /// The cluster's kubeconfig (`runtime = "kube"`: required; k3s mode uses the one
    /// k3s writes, `<data-dir>/k3s/kubeconfig.yaml`). Its current context is used.
    pub kubeconfig: Option<PathBuf>,
    /// The namespace Hearth's pods live in, made at first connection if missing.
    pub namespace: String,
    /// The node that holds Hearth's data dir: pods with mounts are pinned to it. `None`:
    /// this host's name (k3s's node name by default).
    pub node_name: Option<String>,
}

impl Default for KubeConfig {
    fn default() -> Self {
        KubeConfig {
            kubeconfig: None,
            namespace: "hearth".into(),
            node_name: None,
        }
    }
}

/// Written once the pod's whole log is in `output.log`.
const LOGS_DONE: &str = "logs.done";
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `wait` gives the log copy to drain after the pod ended.
const LOG_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// A watch is re-opened (after a fresh GET) this often, as client-go's reflector does.
const WATCH_TIMEOUT_SECONDS: u32 = 290;
/// How often the log copy asks again while the container has not started.
const LOG_RETRY: Duration = Duration::from_secs(1);
/// The API server answered (a status about the request); anything else means it could
/// not be reached.
fn unreachable(e: &::kube::Error) -> bool {
    !matches!(
        e,
        ::kube::Error::Api(_) | ::kube::Error::SerdeError(_) | ::kube::Error::BuildRequest(_)
    )
}

fn status_code(e: &::kube::Error) -> Option<u16> {
    match e {
        ::kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// The loopback listeners of one workload and the pod IP they relay to (known once the
/// pod runs).
struct Relay {
    tasks: Vec<tokio::task::AbortHandle>,
    target: Arc<Mutex<Option<IpAddr>>>,
}

pub struct KubeRuntime {
    root: PathBuf,
    log_max_bytes: u64,
    config: KubeConfig,
    /// `k3s` or `kube`: the mode, for messages.
    mode: &'static str,
    /// This host's node name (pods with mounts are pinned to it).
    node: Option<String>,
    /// Made on first use (the kubeconfig may not be written yet) or given (tests).
    client: tokio::sync::Mutex<Option<Client>>,
    /// The API server, for messages (`https://127.0.0.1:6443`).
    server: Mutex<String>,
    /// Whether the namespace was made (or found).
    namespace_ready: AtomicBool,
    /// Whether the pods of ended workloads left by an earlier daemon were looked for
    /// (once, at the first probe that reaches the API server).
    swept: AtomicBool,
    available: Mutex<Availability>,
    /// Log copies running in this daemon, by workload id; the receiver turns `true`
    /// once the whole log is copied.
    followers: Mutex<HashMap<String, watch::Receiver<bool>>>,
    relays: Mutex<HashMap<String, Relay>>,
}

impl KubeRuntime {
    /// `mode`: `k3s` (the kubeconfig k3s writes) or `kube`. Nothing is read or
    /// connected here: the first call does.
    pub fn new(
        root: PathBuf,
        log_max_bytes: u64,
        config: KubeConfig,
        mode: &'static str,
    ) -> Result<KubeRuntime, RuntimeError> {
        std::fs::create_dir_all(&root).map_err(io_err(&root))?;
        let node = config
            .node_name
            .clone()
            .or_else(|| nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()));
        let server = match &config.kubeconfig {
            Some(path) => format!("the cluster of {}", path.display()),
            None => "the cluster".to_string(),
        };
        Ok(KubeRuntime {
            root,
            log_max_bytes,
            available: Mutex::new(Err(format!("{server} has not been asked yet"))),
            server: Mutex::new(server),
            config,
            mode,
            node,
            client: tokio::sync::Mutex::new(None),
            namespace_ready: AtomicBool::new(false),
            swept: AtomicBool::new(false),
            followers: Mutex::new(HashMap::new()),
            relays: Mutex::new(HashMap::new()),
        })
    }

    /// With a client made elsewhere (a recorded API in tests).
    #[cfg(test)]
    pub fn with_client(
        root: PathBuf,
        log_max_bytes: u64,
        config: KubeConfig,
        client: Client,
    ) -> Result<KubeRuntime, RuntimeError> {
        let runtime = KubeRuntime::new(root, log_max_bytes, config, "kube")?;
        *runtime.client.try_lock().map_err(|e| RuntimeError::Start {
            id: String::new(),
            message: e.to_string(),
        })? = Some(client);
        Ok(runtime)
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    fn server(&self) -> String {
        self.server.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn unavailable(&self, reason: String) -> RuntimeError {
        *self.available.lock().unwrap_or_else(PoisonError::into_inner) = Err(reason.clone());
        RuntimeError::Unavailable {
            runtime: self.mode,
            reason,
        }
    }

    fn api_error(&self, id: &str, what: &str, e: ::kube::Error) -> RuntimeError {
        if unreachable(&e) {
            self.unavailable(format!(
                "the API server at {} does not answer: {e}",
                self.server()
            ))
        } else {
            RuntimeError::Start {
                id: id.to_string(),
                message: format!("{what}: {e}"),
            }
        }
    }

    /// The client, made from the kubeconfig on first use, and the namespace made.
    async fn client(&self) -> Result<Client, RuntimeError> {
        let client = {
            let mut slot = self.client.lock().await;
            match slot.as_ref() {
                Some(client) => client.clone(),
                None => {
                    let client = self.connect().await?;
                    *slot = Some(client.clone());
                    client
                }
            }
        };
        if !self.namespace_ready.load(Ordering::Relaxed) {
            self.ensure_namespace(&client).await?;
        }
        Ok(client)
    }

    async fn connect(&self) -> Result<Client, RuntimeError> {
        let Some(path) = self.config.kubeconfig.clone() else {
            return Err(self.unavailable("no kubeconfig is configured ([kube] kubeconfig)".into()));
        };
        if !path.exists() {
            return Err(self.unavailable(match self.mode {
                "k3s" => format!(
                    "k3s has not written its kubeconfig {} yet (k3s is starting)",
                    path.display()
                ),
                _ => format!(
                    "the kubeconfig {} does not exist ([kube] kubeconfig)",
                    path.display()
                ),
            }));
        }
        // kube-rs builds its TLS client from rustls' process-wide provider: ring, as
        // everywhere in Hearth.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kubeconfig = ::kube::config::Kubeconfig::read_from(&path)
            .map_err(|e| self.unavailable(format!("cannot read the kubeconfig {}: {e}", path.display())))?;
        let config = ::kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .map_err(|e| self.unavailable(format!("cannot use the kubeconfig {}: {e}", path.display())))?;
        *self.server.lock().unwrap_or_else(PoisonError::into_inner) = config.cluster_url.to_string();
        Client::try_from(config)
            .map_err(|e| self.unavailable(format!("cannot make a client for {}: {e}", path.display())))
    }

    /// Makes the namespace Hearth's pods live in; one that exists, or a refusal to
    /// make it (a cluster where Hearth may only use its namespace), is left as it is.
    async fn ensure_namespace(&self, client: &Client) -> Result<(), RuntimeError> {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(self.config.namespace.clone()),
                labels: Some([(LABEL_MANAGED_BY.0.to_string(), LABEL_MANAGED_BY.1.to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        match namespaces.create(&PostParams::default(), &namespace).await {
            Ok(_) => {}
            Err(e) if status_code(&e) == Some(409) => {}
            Err(e) if status_code(&e) == Some(403) => {
                tracing::warn!(namespace = %self.config.namespace, error = %e, "may not make the pods' namespace; using it as it is");
            }
            Err(e) => return Err(self.api_error("", "making the pods' namespace", e)),
        }
        self.namespace_ready.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn pods(&self, client: &Client) -> Api<Pod> {
        Api::namespaced(client.clone(), &self.config.namespace)
    }

    async fn get(&self, client: &Client, id: &str) -> Result<Option<Pod>, RuntimeError> {
        self.pods(client)
            .get_opt(&pod_name(id))
            .await
            .map_err(|e| self.api_error(id, "reading its pod", e))
    }

    async fn delete(&self, client: &Client, id: &str) -> Result<(), RuntimeError> {
        match self
            .pods(client)
            .delete(&pod_name(id), &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(self.api_error(id, "deleting its pod", e)),
        }
    }

    /// Ends a workload that never ran (`reason`, `message`) and records it.
    fn ended_before_start(
        &self,
        dir: &Path,
        reason: &str,
        message: String,
    ) -> Result<RunState, RuntimeError> {
        let exit = ExitInfo {
            exit_code: None,
            signal: None,
            reason: reason.into(),
            message,
            started_at: None,
            finished_at: crate::store::now_rfc3339(),
        };
        write_exit(dir, &exit)?;
        Ok(RunState::Exited(exit))
    }

    /// Who the pod runs as: in isolated mode its namespace's user, as a process
    /// workload does (the directories it is given are that user's).
    async fn user(&self, workload: &Workload) -> Result<Result<PodUser, String>, RuntimeError> {
        let mut user = PodUser::from_spec(workload);
        if !super::identity::global().isolated() {
            return Ok(Ok(user));
        }
        let (namespace, sc) = (
            workload.owner.namespace.clone(),
            workload.security_context.clone(),
        );
        let run_as = tokio::task::spawn_blocking(move || {
            super::identity::global().for_workload(&namespace, sc.as_ref())
        })
        .await
        .map_err(|e| RuntimeError::Start {
            id: workload.id.clone(),
            message: e.to_string(),
        })?;
        Ok(match run_as {
            Ok(run_as) => {
                user.uid = Some(run_as.uid);
                user.gid = Some(run_as.gid);
                user.groups = run_as.groups;
                Ok(user)
            }
            Err(e) => Err(e.to_string()),
        })
    }

    /// Starts copying the pod's log into `output.log`, unless a copy runs already. A
    /// new copy starts from the first byte the kubelet kept, so one begun after a
    /// restart loses nothing that is still there.
    fn follow(&self, client: &Client, id: &str) -> watch::Receiver<bool> {
        let mut followers = self.followers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rx) = followers.get(id) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(false);
        followers.insert(id.to_string(), rx.clone());
        drop(followers);
        let (pods, dir, name, max) = (self.pods(client), self.dir(id), pod_name(id), self.log_max_bytes);
        let id = id.to_string();
        tokio::spawn(async move {
            let (chunks, mut rx_chunks) = tokio::sync::mpsc::channel::<Vec<u8>>(256);
            let writer_dir = dir.clone();
            // File writes on the blocking pool, in order.
            let writer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                for f in [LOG, LOG_ROTATED, TIMES, TIMES_ROTATED, LOGS_DONE] {
                    match std::fs::remove_file(writer_dir.join(f)) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                        _ => {}
                    }
                }
                let mut log = LogWriter::open(&writer_dir, max)?;
                while let Some(chunk) = rx_chunks.blocking_recv() {
                    let (at, bytes) = split_timestamp(&chunk);
                    log.write(bytes, at.unwrap_or_else(super::log_times::now_nanos))?;
                }
                Ok(())
            });
            let params = LogParams {
                container: Some(CONTAINER.into()),
                follow: true,
                timestamps: true,
                ..Default::default()
            };
            let complete = loop {
                match pods.log_stream(&name, &params).await {
                    Ok(stream) => {
                        let mut stream = std::pin::pin!(stream);
                        let mut whole = true;
                        loop {
                            let mut line = Vec::new();
                            match stream.read_until(b'\n', &mut line).await {
                                Ok(0) => break,
                                Ok(_) => {
                                    if chunks.send(line).await.is_err() {
                                        whole = false;
                                        break;
                                    }
                                }
                                Err(e) => {
                                    tracing::warn!(workload = %id, error = %e, "copying a pod's log");
                                    whole = false;
                                    break;
                                }
                            }
                        }
                        break whole;
                    }
                    // 400: the container has not started (being made, pulling); ask
                    // again until it runs, or until the pod ended without running.
                    Err(e) if status_code(&e) == Some(400) => match pods.get_opt(&name).await {
                        Ok(Some(pod)) if !ended(&pod) => tokio::time::sleep(LOG_RETRY).await,
                        Ok(_) => break true,
                        Err(e) => {
                            tracing::warn!(workload = %id, error = %e, "copying a pod's log");
                            break false;
                        }
                    },
                    Err(e) if status_code(&e) == Some(404) => break true,
                    Err(e) => {
                        tracing::warn!(workload = %id, error = %e, "copying a pod's log");
                        break false;
                    }
                }
            };
            drop(chunks);
            let written = matches!(writer.await, Ok(Ok(())));
            if complete && written {
                let _ = tokio::task::spawn_blocking(move || write_atomic(&dir.join(LOGS_DONE), b"")).await;
            }
            // Done, whole or not: a later `follow` may start over.
            let _ = tx.send(true);
        });
        rx
    }

    /// Waits until the pod's log is in `output.log` (after it ended).
    async fn drain_logs(&self, client: &Client, id: &str) {
        if self.dir(id).join(LOGS_DONE).exists() {
            return;
        }
        let mut rx = self.follow(client, id);
        let _ = tokio::time::timeout(LOG_DRAIN_TIMEOUT, rx.wait_for(|done| *done)).await;
        let mut followers = self.followers.lock().unwrap_or_else(PoisonError::into_inner);
        followers.remove(id);
    }

    /// Relays `127.0.0.1:<port>` to `<pod IP>:<port>` for each of the pod's ports,
    /// unless it is done already; the pod IP is learnt from `pod` or, at the first
    /// connection, from the API.
    fn relay(&self, client: &Client, id: &str, pod: &Pod) {
        let ports = pod_ports(pod);
        let mut relays = self.relays.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(relay) = relays.get(id) {
            if let Some(ip) = pod_ip(pod) {
                *relay.target.lock().unwrap_or_else(PoisonError::into_inner) = Some(ip);
            }
            return;
        }
        if ports.is_empty() {
            return;
        }
        let target = Arc::new(Mutex::new(pod_ip(pod)));
        let mut tasks = Vec::new();
        for port in ports {
            let (target, pods, name, id) = (
                Arc::clone(&target),
                self.pods(client),
                pod_name(id),
                id.to_string(),
            );
            let task = tokio::spawn(async move {
                let listener = match tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port))
                    .await
                {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(workload = %id, port, error = %e, "cannot listen on the workload's loopback port");
                        return;
                    }
                };
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        // Out of descriptors and the like: do not spin.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let known = *target.lock().unwrap_or_else(PoisonError::into_inner);
                    let ip = match known {
                        Some(ip) => Some(ip),
                        None => match pods.get_opt(&name).await {
                            Ok(Some(pod)) => {
                                let ip = pod_ip(&pod);
                                *target.lock().unwrap_or_else(PoisonError::into_inner) = ip;
                                ip
                            }
                            _ => None,
                        },
                    };
                    // Not running yet: the connection is refused, as a process that
                    // does not listen yet refuses it.
                    let Some(ip) = ip else { continue };
                    tokio::spawn(async move {
                        if let Ok(mut outbound) =
                            tokio::net::TcpStream::connect(SocketAddr::new(ip, port)).await
                        {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            });
            tasks.push(task.abort_handle());
        }
        relays.insert(id.to_string(), Relay { tasks, target });
    }

    fn end_relay(&self, id: &str) {
        let relay = self
            .relays
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        if let Some(relay) = relay {
            for task in relay.tasks {
                task.abort();
            }
        }
    }

    /// Records the end of an ended pod (its log drained first) and returns it.
    async fn finish(&self, client: &Client, id: &str, pod: &Pod) -> Result<ExitInfo, RuntimeError> {
        let dir = self.dir(id);
        if let Some(exit) = read_exit(&dir) {
            return Ok(exit);
        }
        // An adopted pod whose directory is gone (a data dir restored without it).
        tokio::fs::create_dir_all(&dir).await.map_err(io_err(&dir))?;
        self.drain_logs(client, id).await;
        let exit = exit_from(&dir, pod);
        write_exit(&dir, &exit)?;
        self.end_relay(id);
        Ok(exit)
    }

    /// The end of a workload whose pod is gone: stopped by Hearth (deleted), or lost.
    fn gone(&self, id: &str) -> Result<ExitInfo, RuntimeError> {
        let dir = self.dir(id);
        if !dir.join(STOP).exists() {
            return Err(RuntimeError::NotFound(id.to_string()));
        }
        self.end_relay(id);
        let exit = ExitInfo {
            exit_code: None,
            signal: None,
            reason: "Stopped".into(),
            message: "stopped on request".into(),
            started_at: None,
            finished_at: crate::store::now_rfc3339(),
        };
        write_exit(&dir, &exit)?;
        Ok(exit)
    }

    async fn observe(&self, id: &str) -> Result<RunState, RuntimeError> {
        let dir = self.dir(id);
        if let Some(exit) = read_exit(&dir) {
            return Ok(RunState::Exited(exit));
        }
        let client = self.client().await?;
        match self.get(&client, id).await? {
            None if dir.join(STOP).exists() => Ok(RunState::Exited(self.gone(id)?)),
            None => Err(RuntimeError::NotFound(id.to_string())),
            Some(p) if ended(&p) => Ok(RunState::Exited(exit_from(&dir, &p))),
            Some(p) => Ok(RunState::Running {
                started_at: started_at(&p),
            }),
        }
    }

    /// Deletes the pods whose end is recorded (`exit.json`) but which were not
    /// deleted: their daemon died, or the API server was away, between the two.
    async fn sweep(&self) {
        let ids = match self.list(None).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "looking for pods of ended workloads");
                return;
            }
        };
        for id in ids {
            if read_exit(&self.dir(&id)).is_some() {
                if let Err(e) = self.forget(&id).await {
                    tracing::warn!(workload = %id, error = %e, "deleting the pod of an ended workload");
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Runtime for KubeRuntime {
    fn name(&self) -> &'static str {
        self.mode
    }

    /// Idempotent: a pod that exists (from before a crash or restart) is adopted, never
    /// made twice; one stopped before it started never starts.
    async fn start(&self, workload: &Workload) -> Result<RunState, RuntimeError> {
        let id = workload.id.as_str();
        let dir = self.dir(id);
        tokio::fs::create_dir_all(&dir).await.map_err(io_err(&dir))?;
        if let Some(exit) = read_exit(&dir) {
            return Ok(RunState::Exited(exit));
        }
        let client = self.client().await?;
        if let Some(pod) = self.get(&client, id).await? {
            if ended(&pod) {
                return Ok(RunState::Exited(exit_from(&dir, &pod)));
            }
            self.follow(&client, id);
            self.relay(&client, id, &pod);
            return Ok(RunState::Running {
                started_at: started_at(&pod),
            });
        }
        if dir.join(STOP).exists() {
            return self.ended_before_start(&dir, "Stopped", "stopped before it started".into());
        }
        if workload.image.as_deref().is_none_or(str::is_empty) {
            return self.ended_before_start(
                &dir,
                "StartError",
                format!(
                    "the {} runtime runs each workload in its image, and this one names none (set the container's image)",
                    self.mode
                ),
            );
        }
        let user = match self.user(workload).await? {
            Ok(user) => user,
            Err(message) => return self.ended_before_start(&dir, "StartError", message),
        };
        let manifest = pod_manifest(workload, &self.config.namespace, self.node.as_deref(), &user);
        let pod = match self.pods(&client).create(&PostParams::default(), &manifest).await {
            Ok(pod) => pod,
            // Made meanwhile by another start of the same workload: adopt it.
            Err(e) if status_code(&e) == Some(409) => return Box::pin(self.start(workload)).await,
            Err(e) if unreachable(&e) => return Err(self.api_error(id, "creating its pod", e)),
            Err(e) => {
                return self.ended_before_start(
                    &dir,
                    "StartError",
                    format!("the API server refused the pod: {e}"),
                );
            }
        };
        // Stopped while it was being made.
        if dir.join(STOP).exists() {
            self.delete(&client, id).await?;
            return self.ended_before_start(&dir, "Stopped", "stopped before it started".into());
        }
        self.follow(&client, id);
        self.relay(&client, id, &pod);
        Ok(RunState::Running {
            started_at: started_at(&pod),
        })
    }

    async fn status(&self, id: &str) -> Result<RunState, RuntimeError> {
        self.observe(id).await
    }

    /// Watches the pod (a watch on its name, from the resource version read) until it
    /// ends, then waits for its log. The deadline is the pod's own
    /// `activeDeadlineSeconds`, so a restarted daemon needs to enforce nothing.
    async fn wait(&self, id: &str) -> Result<ExitInfo, RuntimeError> {
        let dir = self.dir(id);
        loop {
            if let Some(exit) = read_exit(&dir) {
                return Ok(exit);
            }
            let client = self.client().await?;
            let Some(pod) = self.get(&client, id).await? else {
                return self.gone(id);
            };
            if ended(&pod) {
                return self.finish(&client, id, &pod).await;
            }
            self.follow(&client, id);
            self.relay(&client, id, &pod);
            let version = pod
                .metadata
                .resource_version
                .clone()
                .unwrap_or_else(|| "0".into());
            let params = WatchParams::default()
                .fields(&format!("metadata.name={}", pod_name(id)))
                .timeout(WATCH_TIMEOUT_SECONDS);
            let stream = self
                .pods(&client)
                .watch(&params, &version)
                .await
                .map_err(|e| self.api_error(id, "watching its pod", e))?;
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(WatchEvent::Added(pod) | WatchEvent::Modified(pod)) => {
                        self.relay(&client, id, &pod);
                        if ended(&pod) {
                            return self.finish(&client, id, &pod).await;
                        }
                    }
                    Ok(WatchEvent::Deleted(pod)) => {
                        if ended(&pod) {
                            return self.finish(&client, id, &pod).await;
                        }
                        return self.gone(id);
                    }
                    Ok(WatchEvent::Bookmark(_)) => {}
                    // 410 Gone (the version is too old) and the like: read it again.
                    Ok(WatchEvent::Error(_)) => break,
                    Err(e) if unreachable(&e) => return Err(self.api_error(id, "watching its pod", e)),
                    Err(_) => break,
                }
            }
        }
    }

    async fn logs(&self, id: &str) -> Result<LogFiles, RuntimeError> {
        let (dir, owned) = (self.dir(id), id.to_string());
        tokio::task::spawn_blocking(move || log_files(&dir, &owned))
            .await
            .map_err(|e| RuntimeError::Io {
                path: self.dir(id),
                source: std::io::Error::other(e),
            })?
    }

    /// Recorded first (`<dir>/stop`), so that a pod still being made never runs; an
    /// existing one is deleted (SIGTERM, SIGKILL after its grace period, by the
    /// kubelet).
    async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        let dir = self.dir(id);
        tokio::fs::create_dir_all(&dir).await.map_err(io_err(&dir))?;
        let stop = dir.join(STOP);
        if !stop.exists() {
            write_atomic(&stop, crate::store::now_rfc3339().as_bytes()).map_err(io_err(&dir))?;
        }
        if read_exit(&dir).is_some() {
            return Ok(());
        }
        let client = self.client().await?;
        self.delete(&client, id).await
    }

    async fn list(&self, owner_uid: Option<&str>) -> Result<Vec<String>, RuntimeError> {
        let client = self.client().await?;
        let selector = match owner_uid {
            Some(uid) => format!("{LABEL_OWNER_UID}={}", label_value(uid)),
            None => format!("{}={}", LABEL_MANAGED_BY.0, LABEL_MANAGED_BY.1),
        };
        let pods = self
            .pods(&client)
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| self.api_error("", "listing pods", e))?;
        let mut ids: Vec<String> = pods
            .items
            .iter()
            .filter(|p| owner_uid.is_none_or(|uid| annotation(p, ANNOTATION_OWNER_UID) == Some(uid)))
            .filter_map(|p| annotation(p, ANNOTATION_WORKLOAD).map(str::to_string))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Once the end is recorded: the log is copied whole, the end kept in `exit.json`,
    /// then the pod deleted.
    async fn forget(&self, id: &str) -> Result<(), RuntimeError> {
        let dir = self.dir(id);
        let client = self.client().await?;
        let Some(pod) = self.get(&client, id).await? else {
            self.end_relay(id);
            return Ok(());
        };
        if !ended(&pod) && !dir.join(STOP).exists() {
            return Err(RuntimeError::StillRunning(id.to_string()));
        }
        if ended(&pod) {
            self.finish(&client, id, &pod).await?;
        }
        self.end_relay(id);
        self.delete(&client, id).await
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        match self.observe(id).await {
            Ok(RunState::Running { .. }) => return Err(RuntimeError::StillRunning(id.to_string())),
            Ok(RunState::Exited(_)) | Err(RuntimeError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        self.forget(id).await?;
        {
            let mut followers = self.followers.lock().unwrap_or_else(PoisonError::into_inner);
            followers.remove(id);
        }
        let dir = self.dir(id);
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&dir)(e)),
            _ => Ok(()),
        }
    }

    fn limits_note(&self) -> String {
        format!(
            "pods in namespace {} of {}: CPU and memory as container requests and limits; GPUs as {} limits with runtimeClassName {RUNTIME_CLASS}, placed by the device plugin; ports relayed from 127.0.0.1 to the pod IP",
            self.config.namespace,
            self.server(),
            crate::k3s::manifests::GPU_RESOURCE,
        )
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            runs_images: true,
            needs_command: false,
            mounts: true,
            gpu_mode: GpuMode::Delegated,
            own_network: true,
            local_admission: true,
        }
    }

    fn availability(&self) -> Availability {
        self.available
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn probe(&self) -> Availability {
        let outcome = match self.client().await {
            Ok(client) => match tokio::time::timeout(PROBE_TIMEOUT, client.apiserver_version()).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!(
                    "the API server at {} does not answer: {e}",
                    self.server()
                )),
                Err(_) => Err(format!(
                    "the API server at {} did not answer within {} s",
                    self.server(),
                    PROBE_TIMEOUT.as_secs()
                )),
            },
            Err(RuntimeError::Unavailable { reason, .. }) => Err(reason),
            Err(e) => Err(e.to_string()),
        };
        *self.available.lock().unwrap_or_else(PoisonError::into_inner) = outcome.clone();
        if outcome.is_ok() && !self.swept.swap(true, Ordering::Relaxed) {
            self.sweep().await;
        }
        outcome
    }
}
