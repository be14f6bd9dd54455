//! `hearth serve`: start-up, the two listeners, background loops, and an orderly stop
//! on SIGTERM (drain requests, stop controllers, close the database).

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web;

use crate::auth::Auth;
use crate::config::{Config, RuntimeKind};
use crate::gpu::GpuProbe;
use crate::health::Health;
use crate::http::{self, AppState, RouteTable};
use crate::jobs::Jobs;
use crate::metrics::Metrics;
use crate::scheduler::Scheduler;
use crate::store::Store;
use crate::systemd;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data dir {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("runtime = \"{runtime}\": this build does not provide the {runtime} runtime (it provides: {available}); set runtime = \"{first}\" in config.toml, or HEARTH_RUNTIME={first} or --runtime {first}")]
    RuntimeUnavailable {
        runtime: &'static str,
        /// The runtimes this build provides, comma-separated.
        available: String,
        first: &'static str,
    },
    #[error("--runtime k3s: preflight failed: {0}; `hearth k3s preflight` shows every check")]
    K3sPreflight(String),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error(transparent)]
    Scheduler(#[from] crate::scheduler::SchedulerError),
    #[error(transparent)]
    Identity(#[from] crate::runtime::identity::IdentityError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Kubeconfig(#[from] crate::kubeconfig::KubeconfigError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("data dir {path} is in use by another hearth serve (pid {holder}); stop it first, or give this one its own --data-dir")]
    DataDirInUse { path: String, holder: String },
}

fn prepare_data_dir(path: &Path) -> Result<(), StartError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| StartError::DataDir {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    Ok(())
}

/// Holds `<data-dir>/serve.lock` (an exclusive `flock`) for the daemon's lifetime: two
/// daemons on one data dir would run every controller twice against one database and
/// overwrite each other's kubeconfig and address file. The kernel releases the lock
/// when the process ends, however it ends; a start right after a stop waits up to 5 s
/// for the old process to go.
fn lock_data_dir(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, StartError> {
    use std::io::{Read, Seek, Write};
    let lock_path = path.join("serve.lock");
    let err = |source| StartError::DataDir {
        path: lock_path.display().to_string(),
        source,
    };
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(err)?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(mut locked) => {
                locked.set_len(0).map_err(err)?;
                locked.rewind().map_err(err)?;
                write!(locked, "{}", std::process::id()).map_err(err)?;
                return Ok(locked);
            }
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() >= deadline => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(StartError::DataDirInUse {
                    path: path.display().to_string(),
                    holder: holder.trim().to_string(),
                });
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err((_, errno)) => return Err(err(std::io::Error::from(errno))),
        }
    }
}

fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).map_err(|source| StartError::Bind {
        addr: addr.to_string(),
        source,
    })
}

/// Written once every listener is bound, so scripts and tests find the real ports.
fn write_addr_file(data_dir: &Path, api: &str, serving: &str, tls: &str) -> std::io::Result<()> {
    let body = serde_json::json!({"api": api, "serving": serving, "tls": tls, "pid": std::process::id()});
    let tmp = data_dir.join("hearth.addr.tmp");
    std::fs::write(&tmp, body.to_string())?;
    std::fs::rename(tmp, data_dir.join("hearth.addr"))
}

/// glibc gives each thread that allocates its own malloc arena, up to 8 per CPU, and
/// each keeps freed memory: with a dozen threads that is most of an idle daemon's RSS.
/// Two arenas serve a daemon whose threads mostly wait. Called before any thread starts.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a malloc tunable; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns freed heap pages of every arena to the kernel (glibc `malloc_trim`).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `runtime` in `/readyz`: the backend, its limits, and whether it can take workloads.
fn set_runtime_health(
    health: &Health,
    runtime: &dyn crate::runtime::Runtime,
    available: &crate::runtime::Availability,
    kind: RuntimeKind,
) {
    let k3s_note = match kind {
        RuntimeKind::K3s => "; k3s is supervised beside it, but the kube workload backend is not built yet: workloads run as host processes",
        RuntimeKind::Process | RuntimeKind::Docker => "",
    };
    match available {
        Ok(()) => health.set(
            "runtime",
            true,
            format!(
                "{} backend; {}{}",
                runtime.name(),
                runtime.limits_note(),
                k3s_note
            ),
        ),
        Err(reason) => health.set(
            "runtime",
            false,
            format!("{} backend unavailable: {reason}", runtime.name()),
        ),
    }
}

/// Probes the runtime every two seconds: `/readyz` follows, and when it comes back the
/// queue is admitted again (nothing was admitted while it was away).
async fn watch_runtime(
    scheduler: Scheduler,
    health: Health,
    mut last: crate::runtime::Availability,
    kind: RuntimeKind,
) {
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let runtime = Arc::clone(scheduler.runtime());
        let now = runtime.probe().await;
        if now != last {
            set_runtime_health(&health, runtime.as_ref(), &now, kind);
            match &now {
                Ok(()) => {
                    tracing::info!(
                        runtime = runtime.name(),
                        "the runtime is reachable again; admitting"
                    );
                    if let Err(e) = scheduler.admit().await {
                        tracing::warn!(error = %e, "admitting after the runtime came back");
                    }
                }
                Err(reason) => {
                    tracing::warn!(runtime = runtime.name(), %reason, "the runtime is unavailable")
                }
            }
            last = now;
        }
    }
}

pub fn run(config: Config) -> Result<(), StartError> {
    let begun = Instant::now();
    limit_malloc_arenas();
    if !config.runtime.is_available() {
        let available = RuntimeKind::available();
        return Err(StartError::RuntimeUnavailable {
            runtime: config.runtime.as_str(),
            available: available
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            first: available.first().map_or("process", |r| r.as_str()),
        });
    }
    prepare_data_dir(&config.data_dir)?;
    let _data_dir_lock = lock_data_dir(&config.data_dir)?;
    let k3s_options = match config.runtime {
        RuntimeKind::K3s => Some(prepare_k3s(&config)?),
        RuntimeKind::Process | RuntimeKind::Docker => None,
    };
    let identities = crate::runtime::identity::Identities::new(
        &config.isolation,
        &config.data_dir,
        nix::unistd::geteuid().is_root(),
    );
    tracing::info!("{}", identities.describe());
    crate::runtime::identity::install(identities, &config.data_dir)?;
    let store = Store::open(&config.data_dir.join("hearth.db"))?;
    let auth = Auth::new(store.clone())?;
    let token_path = auth.bootstrap(&config.data_dir)?;
    tracing::info!(path = %token_path.display(), "admin token is in this file (mode 0600)");

    let gpus = GpuProbe::new(config.gpu.simulate);
    let inventory = gpus.snapshot();
    if let Some(reason) = &inventory.reason {
        tracing::info!(gpus = inventory.count(), "{reason}");
    }

    let health = Health::default();
    health.set("store", true, "open");

    // Controllers and the scheduler run on their own runtime, apart from the HTTP
    // workers, so request handling never waits behind reconcile loops.
    let core = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("hearth-core")
        .enable_all()
        .build()?;
    let runtime = crate::runtime::from_config(&config)?;
    // Asked once before recovery, so that the first admission pass knows; a backend
    // that cannot be reached is reported and waited for, never a failed start-up.
    let available = core.block_on(runtime.probe());
    set_runtime_health(&health, runtime.as_ref(), &available, config.runtime);
    let k3s = k3s_options.map(|options| {
        let _guard = core.enter();
        crate::k3s::supervisor::Supervisor::start(options, health.clone())
    });
    let scheduler = Scheduler::new(
        store.clone(),
        runtime,
        gpus.clone(),
        config.gpu.time_slicing_replicas,
        config.scheduler.clone(),
        core.handle().clone(),
    );
    core.block_on(scheduler.recover())?;
    core.spawn(watch_runtime(
        scheduler.clone(),
        health.clone(),
        available,
        config.runtime,
    ));
    let jobs = Jobs::new(store.clone(), scheduler.clone(), config.jobs.clone());
    let serving = crate::serving::service::Services {
        store: store.clone(),
        runtimes: Arc::new(crate::serving::runtimes::RuntimeTable::new(
            &config.serving.runtimes,
        )),
        config: Arc::new(config.serving.clone()),
        wake: Arc::new(tokio::sync::Notify::new()),
        scheduler: scheduler.clone(),
    };

    let metrics = Arc::new(Metrics::new());
    metrics.watch_runtime("core", core.handle().clone());
    let plane = crate::serving::dataplane::DataPlane::new(Arc::clone(&serving.config), Some(auth.clone()));
    plane.metrics.register(&metrics);
    let serving_controller = Arc::new(crate::serving::controller::Controller::new(
        store.clone(),
        scheduler.clone(),
        Arc::clone(&plane),
        Arc::clone(&serving.runtimes),
        config.data_dir.clone(),
        Arc::clone(&serving.wake),
    ));

    let controller = crate::pipelines::controller::Controller::new(
        store.clone(),
        config.data_dir.clone(),
        config.pipelines.clone(),
        scheduler.clone(),
        config.workloads.path_prefix.clone(),
    );
    let notebooks = crate::notebooks::Notebooks::new(
        store.clone(),
        scheduler.clone(),
        config.notebooks.clone(),
        config.data_dir.clone(),
        config.workloads.path_prefix.clone(),
    );
    let tuning = crate::tuning::Tuning::new(store.clone(), jobs.clone());
    // Before any Job starts: a Push trial's process needs its credential from the start.
    let push = core.block_on(crate::tuning::push::Push::start(&config.data_dir, tuning.clone()))?;
    jobs.set_extra_env(Arc::new(move |job| push.environment(job)));
    start_controllers(
        &core,
        &health,
        &store,
        &scheduler,
        &jobs,
        &controller,
        notebooks.queue(),
    );
    start_tuning_controller(&core, &health, &store, &tuning);
    let (collector, every) = (
        scheduler.clone(),
        Duration::from_secs(config.workloads.gc_interval_seconds),
    );
    core.spawn(crate::controller::supervise(
        "collector",
        health.clone(),
        every,
        move || {
            let collector = collector.clone();
            async move {
                loop {
                    if let Err(e) = collector.collect_garbage().await {
                        tracing::warn!(error = %e, "removing ended workloads of deleted owners");
                    }
                    tokio::time::sleep(every).await;
                }
            }
        },
    ));
    {
        let (controller, health_for_loop) = (controller.clone(), health.clone());
        // The pipelines loop wakes at least every second.
        core.spawn(crate::controller::supervise(
            "pipelines-controller",
            health.clone(),
            Duration::from_secs(1),
            move || controller.clone().run(health_for_loop.clone()),
        ));
    }
    let pipelines = crate::pipelines::api::Pipelines {
        store: store.clone(),
        data_dir: config.data_dir.clone(),
        controller: controller.clone(),
    };

    // The route table needs the document's paths once; the document itself is not kept
    // (see `openapi::serve_json`).
    let routes = Arc::new(RouteTable::from_openapi(&http::openapi::document()));
    let state = web::Data::new(AppState {
        config: Arc::new(config.clone()),
        store: store.clone(),
        auth,
        gpus: gpus.clone(),
        health: health.clone(),
        metrics: {
            metrics.set_gpus(&gpus.snapshot());
            metrics
        },
        started: begun,
        routes,
        serving,
        pipelines,
        scheduler,
        jobs,
        tuning,
        notebooks,
        sessions: http::session::Sessions::new(Duration::from_secs(config.session_ttl_seconds)),
        data_plane: Arc::clone(&plane),
        k3s: k3s
            .as_ref()
            .map(crate::k3s::supervisor::Supervisor::status_handle),
    });

    let mut sans = config.tls_sans.clone();
    let tls_ip = config.tls_listen.ip();
    if !tls_ip.is_unspecified() && !tls_ip.is_loopback() {
        sans.push(tls_ip.to_string());
    }
    let tls = crate::tls::ensure(
        &crate::tls::dir(&config.data_dir),
        &crate::tls::wanted_sans(&sans),
        std::time::SystemTime::now(),
    )?;

    let api_listener = bind(config.listen)?;
    let serving_listener = bind(config.serving_listen)?;
    let tls_listener = bind(config.tls_listen)?;
    let tls_addr = tls_listener.local_addr()?;
    write_admin_kubeconfig(&config.data_dir, &token_path, &tls.ca_pem, tls_addr)?;
    let api_addr = api_listener.local_addr()?;
    let serving_addr = serving_listener.local_addr()?;
    plane.set_address(serving_addr);
    let cpus = crate::node::cpu_count();
    let workers = cpus.clamp(1, 4);
    let serving_workers = match config.serving.workers {
        0 => cpus.max(1),
        n => n,
    };
    let shutdown_timeout = config.shutdown_timeout_seconds;
    let max_body = config.max_body_bytes;

    actix_web::rt::System::new().block_on(async move {
        let api_state = state.clone();
        let api = actix_web::HttpServer::new(move || http::app(api_state.clone()))
            .workers(workers)
            .disable_signals()
            .shutdown_timeout(shutdown_timeout)
            .listen(api_listener)?
            .listen_rustls_0_23(tls_listener, tls.server_config)?
            .run();
        let serving = crate::serving::listener::DataPlaneServer::start(
            serving_listener,
            Arc::clone(&plane),
            serving_workers,
            max_body,
            Duration::from_secs(shutdown_timeout),
        )?;
        let api_handle = api.handle();
        let servers = actix_web::rt::spawn(api);

        // Handlers go in before anyone can learn the address: a SIGTERM sent right after
        // start must drain and exit 0, not kill the daemon with the default action.
        let shutdown = shutdown_signals();
        write_addr_file(
            &state.config.data_dir,
            &api_addr.to_string(),
            &serving_addr.to_string(),
            &tls_addr.to_string(),
        )?;
        tracing::info!(api = %api_addr, tls = %tls_addr, serving = %serving_addr, serving_workers, elapsed_ms = begun.elapsed().as_millis() as u64, "listening");

        state.metrics.watch_runtime("main", tokio::runtime::Handle::current());
        let background = spawn_background(state.clone());
        // On the actix thread: the controller's HTTP client (probes, model fetches) is awc.
        let serving_loop = {
            let health = state.health.clone();
            let tick = Duration::from_millis(state.config.serving.autoscaler_tick_ms);
            actix_web::rt::spawn(crate::controller::supervise(
                "serving-controller",
                state.health.clone(),
                tick,
                move || Arc::clone(&serving_controller).run(health.clone()),
            ))
        };
        // On the actix thread too: the notebook controller probes servers with awc.
        let notebooks_loop = spawn_notebooks_controller(&state);
        // Deletion propagating over ownerReferences, for every stored kind.
        let collector_loop = {
            let state = state.clone();
            actix_web::rt::spawn(crate::controller::supervise(
                "garbage-collector",
                state.health.clone(),
                crate::controller::IDLE_TICK,
                move || crate::kube::gc::run(state.clone()),
            ))
        };
        systemd::notify_ready(&status_line(&state).await);
        // Start-up built and dropped large transient state (the OpenAPI tree, once per
        // worker); hand the freed pages back so idle RSS is what the daemon holds. The
        // workers and the controllers' first passes may still be finishing, so again a
        // second later, and then every minute: glibc returns freed pages below the top
        // of an arena only when asked, and bursts of work leave them behind.
        release_free_memory();
        let trimmer = actix_web::rt::spawn(async {
            let mut pause = Duration::from_secs(1);
            loop {
                tokio::time::sleep(pause).await;
                let _ = tokio::task::spawn_blocking(release_free_memory).await;
                pause = Duration::from_secs(60);
            }
        });

        shutdown.await;
        tracing::info!("shutting down: draining requests");
        systemd::notify_stopping();
        background.abort();
        serving_loop.abort();
        collector_loop.abort();
        notebooks_loop.abort();
        trimmer.abort();
        futures_util::future::join(api_handle.stop(true), serving.stop()).await;
        let _ = servers.await;
        let _ = std::fs::remove_file(state.config.data_dir.join("hearth.addr"));
        Ok::<(), StartError>(())
    })?;
    if let Some(k3s) = k3s {
        tracing::info!("stopping k3s (its pods keep running)");
        core.block_on(k3s.stop());
    }
    // Controllers stop here; running workloads keep going under their shims.
    core.shutdown_timeout(Duration::from_secs(2));
    if let Err(e) = store.close() {
        tracing::warn!(error = %e, "closing the database");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Before k3s starts: stops a k3s a crashed daemon left behind, runs the preflight
/// (refusing to start on a failed check, naming it), writes the containerd template and
/// manifests where k3s reads them, and returns how to supervise it.
fn prepare_k3s(config: &Config) -> Result<crate::k3s::supervisor::Options, StartError> {
    use crate::k3s;
    let k3s_dir = k3s::data_dir(&config.data_dir);
    let pid_file = k3s_dir.join("hearth-k3s.pid");
    if let Some(pid) = k3s::supervisor::stop_leftover(&pid_file, K3S_STOP_TIMEOUT) {
        tracing::info!(pid, "stopped the k3s a previous daemon left running");
    }
    let report = crate::cli::k3s::preflight_report(config);
    for check in &report.checks {
        tracing::info!(
            check = check.name,
            status = check.status.as_str(),
            "k3s preflight: {}",
            check.detail
        );
    }
    if !report.failures().is_empty() {
        return Err(StartError::K3sPreflight(report.failure_summary()));
    }
    let version = report
        .version
        .ok_or_else(|| StartError::K3sPreflight("k3s: no version".into()))?;
    let runtime = k3s::containerd::locate_runtime(Path::new("/"), std::env::var_os("PATH").as_deref());
    let gpus = GpuProbe::new(config.gpu.simulate).snapshot().count();
    let plan = k3s::render::plan(&k3s::render::PlanInput {
        hearth_data_dir: &config.data_dir,
        https_listen_port: config.k3s.https_listen_port,
        generation: version.containerd(),
        runtime: &runtime,
        gpu_count: gpus,
        time_slicing_replicas: config.gpu.time_slicing_replicas,
    });
    std::fs::create_dir_all(k3s::images_dir(&config.data_dir))?;
    k3s::render::write(
        &plan,
        &k3s::manifests_dir(&config.data_dir),
        &k3s::containerd_dir(&config.data_dir),
    )?;
    let node_name = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
        .to_lowercase();
    Ok(k3s::supervisor::Options {
        binary: config.k3s.executable.clone(),
        args: plan.args,
        kubeconfig: k3s::kubeconfig_path(&config.data_dir),
        log_path: k3s_dir.join("k3s.log"),
        log_max_bytes: config.k3s.log_max_bytes,
        pid_file,
        backoff_base: Duration::from_secs_f64(config.k3s.restart_backoff_base_seconds),
        backoff_max: Duration::from_secs_f64(config.k3s.restart_backoff_max_seconds),
        poll: Duration::from_secs(2),
        stop_timeout: K3S_STOP_TIMEOUT,
        node_name,
        expected_gpus: gpus as u64 * u64::from(config.gpu.time_slicing_replicas.max(1)),
    })
}

/// How long k3s has after SIGTERM, within the unit's `TimeoutStopSec=45`.
const K3S_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// `<data-dir>/kubeconfig` for the admin, rewritten at every start since the port, the
/// CA or the admin token may have changed (k3s rewrites `k3s.yaml` likewise).
fn write_admin_kubeconfig(
    data_dir: &Path,
    token_path: &Path,
    ca_pem: &str,
    tls_addr: std::net::SocketAddr,
) -> Result<(), StartError> {
    let token = std::fs::read_to_string(token_path)?;
    let server = crate::kubeconfig::server_url(tls_addr);
    let path = crate::kubeconfig::path(data_dir);
    crate::kubeconfig::Kubeconfig {
        server: &server,
        ca_pem,
        insecure_skip_tls_verify: false,
        user: crate::auth::ADMIN_USER,
        token: token.trim(),
        namespace: crate::auth::ADMIN_USER,
    }
    .write(&path)?;
    tracing::info!(path = %path.display(), %server, "kubeconfig for the admin (mode 0600)");
    Ok(())
}

async fn status_line(state: &AppState) -> String {
    let inventory = state.gpus.snapshot();
    let (in_use, active) = match state.scheduler.summary().await {
        Ok(summary) => (summary.gpus_in_use as usize, summary.running),
        Err(_) => (0, 0),
    };
    let line = systemd::status_line(
        &state.health.problems(),
        state.config.runtime.as_str(),
        in_use,
        inventory.count(),
        inventory.simulated,
        active,
    );
    let k3s = state
        .k3s
        .as_ref()
        .map(|k3s| format!(" · {}", k3s.get().status_word()))
        .unwrap_or_default();
    format!(
        "{line}{k3s} · {}",
        crate::runtime::identity::global().status_word()
    )
}

/// The jobs controller and the bridge that wakes controllers on workload events, each
/// under a supervisor.
fn start_controllers(
    core: &tokio::runtime::Runtime,
    health: &Health,
    store: &Store,
    scheduler: &Scheduler,
    jobs: &Jobs,
    pipelines: &crate::pipelines::controller::Controller,
    notebooks_queue: Arc<crate::controller::WorkQueue>,
) {
    let (jobs_queue, pipelines, scheduler) = (jobs.queue(), pipelines.clone(), scheduler.clone());
    core.spawn(crate::controller::supervise(
        "workload-events",
        health.clone(),
        crate::controller::IDLE_TICK,
        move || {
            workload_events(
                scheduler.clone(),
                jobs_queue.clone(),
                pipelines.clone(),
                notebooks_queue.clone(),
            )
        },
    ));
    let (jobs, health_for_loop, store) = (jobs.clone(), health.clone(), store.clone());
    core.spawn(crate::controller::supervise(
        "jobs-controller",
        health.clone(),
        crate::controller::IDLE_TICK,
        move || {
            let (list_jobs, reconcile_jobs) = (jobs.clone(), jobs.clone());
            crate::controller::run_reporting(
                "jobs-controller",
                health_for_loop.clone(),
                jobs.queue(),
                Duration::from_secs(30),
                move || {
                    let jobs = list_jobs.clone();
                    async move { jobs.all_uids().await }
                },
                move |uid| {
                    let jobs = reconcile_jobs.clone();
                    async move { jobs.reconcile(uid).await }
                },
                Some(crate::controller::record_on_resource(store.clone())),
            )
        },
    ));
}

/// The Katib experiment controller ([`crate::tuning::controller`]), supervised.
fn start_tuning_controller(
    core: &tokio::runtime::Runtime,
    health: &Health,
    store: &Store,
    tuning: &crate::tuning::Tuning,
) {
    let (tuning, health_for_loop, store) = (tuning.clone(), health.clone(), store.clone());
    core.spawn(crate::controller::supervise(
        "tuning-controller",
        health.clone(),
        crate::controller::IDLE_TICK,
        move || {
            let (list_all, reconcile) = (tuning.clone(), tuning.clone());
            crate::controller::run_reporting(
                "tuning-controller",
                health_for_loop.clone(),
                tuning.queue(),
                Duration::from_secs(30),
                move || {
                    let tuning = list_all.clone();
                    async move { tuning.all_uids().await }
                },
                move |uid| {
                    let tuning = reconcile.clone();
                    async move { tuning.reconcile(uid).await }
                },
                Some(crate::controller::record_on_resource(store.clone())),
            )
        },
    ));
}

/// The notebook controller ([`crate::notebooks::controller`]), supervised, on the
/// actix thread (its probes use awc, whose clients live on one thread).
fn spawn_notebooks_controller(state: &web::Data<AppState>) -> actix_web::rt::task::JoinHandle<()> {
    let (notebooks, health, store) = (state.notebooks.clone(), state.health.clone(), state.store.clone());
    actix_web::rt::spawn(crate::controller::supervise(
        "notebooks-controller",
        state.health.clone(),
        crate::controller::IDLE_TICK,
        move || {
            let http = std::rc::Rc::new(awc::Client::builder().timeout(Duration::from_secs(5)).finish());
            let (list_all, reconcile) = (notebooks.clone(), notebooks.clone());
            crate::controller::run_reporting(
                "notebooks-controller",
                health.clone(),
                notebooks.queue(),
                Duration::from_secs(30),
                move || {
                    let notebooks = list_all.clone();
                    async move { notebooks.all_uids().await }
                },
                move |uid| {
                    let (notebooks, http) = (reconcile.clone(), std::rc::Rc::clone(&http));
                    async move { notebooks.reconcile(&http, uid).await }
                },
                Some(crate::controller::record_on_resource(store.clone())),
            )
        },
    ))
}

/// Routes workload events to the controller of the workload's owner. Wakes at least
/// every `IDLE_TICK` so its heartbeat shows it alive.
async fn workload_events(
    scheduler: Scheduler,
    jobs_queue: Arc<crate::controller::WorkQueue>,
    pipelines: crate::pipelines::controller::Controller,
    notebooks_queue: Arc<crate::controller::WorkQueue>,
) {
    use tokio::sync::broadcast::error::RecvError;
    let mut events = scheduler.subscribe();
    // Events sent while this loop was down (a restart) are lost: the waiting steps look
    // again (the jobs controller's periodic pass covers jobs).
    pipelines.workload_events_lost();
    loop {
        let Ok(event) = tokio::time::timeout(crate::controller::IDLE_TICK, events.recv()).await else {
            continue;
        };
        match event {
            Ok(event) if event.owner_kind == crate::jobs::spec::KIND => {
                tracing::debug!(workload = %event.id, phase = event.phase.as_str(), "workload event");
                jobs_queue.add(&event.owner_uid);
            }
            Ok(event) if event.owner_kind == crate::notebooks::spec::KIND => {
                notebooks_queue.add(&event.owner_uid);
            }
            Ok(event) if event.owner_kind == crate::pipelines::controller::OWNER_KIND => {
                pipelines.workload_event(&event.id);
            }
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => pipelines.workload_events_lost(),
            Err(RecvError::Closed) => return,
        }
    }
}

/// GPU refresh, systemd status and watchdog.
fn spawn_background(state: web::Data<AppState>) -> actix_web::rt::task::JoinHandle<()> {
    actix_web::rt::spawn(async move {
        let refresh = Duration::from_secs(state.config.gpu.refresh_seconds);
        let watchdog = systemd::watchdog_interval();
        let tick = watchdog.map(|w| w.min(refresh)).unwrap_or(refresh);
        let mut interval = actix_web::rt::time::interval(tick);
        let mut last_gpu_refresh = Instant::now();
        loop {
            interval.tick().await;
            if last_gpu_refresh.elapsed() >= refresh {
                let gpus = state.gpus.clone();
                let _ = web::block(move || gpus.refresh()).await;
                state.metrics.set_gpus(&state.gpus.snapshot());
                last_gpu_refresh = Instant::now();
            }
            systemd::notify_status(&status_line(&state).await);
            // Fed only while every controller makes progress: a stuck one gets the
            // daemon restarted by systemd (its name is in the STATUS= line above).
            if watchdog.is_some() && state.health.progress_fresh() {
                systemd::notify_watchdog();
            }
        }
    })
}

/// Registers the SIGTERM/SIGINT handlers now; the returned future ends at the first one.
fn shutdown_signals() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            // Without signal handlers the daemon can only be killed; keep serving.
            std::future::pending::<()>().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    }
}
