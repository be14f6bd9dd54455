//! The shape every controller shares, after kube-rs: a work queue of resource keys,
//! a reconcile function that is level-triggered and idempotent, and a loop that runs
//! it for queued keys, for keys whose requeue time came, and for every key on a
//! periodic resync. Tests call the reconcile function directly to step a controller.
//!
//! # Failures, panics and giving up
//!
//! The daemon is built with `panic = "unwind"` (see README, "Panics"): one bug in one
//! object's reconcile must not take the other services down. `run_reporting` catches
//! a panic of a reconcile call (`catch_unwind`) as it catches an `Err`, and retries
//! the key with a growing backoff (`retry_backoff`: 1 s doubling to 5 min). Each such
//! failure and, after `MAX_ATTEMPTS` failures in a row, the decision to give up are
//! passed to the controller's `Report` callback; `record_on_resource` is the
//! ready-made one for kinds kept in the `resources` table (keys are uids): a `Warning`
//! event per failure, and on giving up a `ReconcileFailed` condition in
//! `status.conditions`, removed again once a reconcile succeeds. A key given up on is
//! left alone by the periodic resync; an explicit `WorkQueue::add` (an API write, a
//! workload event) tries it again.
//!
//! ```ignore
//! core.spawn(controller::supervise("jobs-controller", health.clone(), controller::IDLE_TICK, move || {
//!     controller::run_reporting("jobs-controller", health.clone(), queue.clone(), resync,
//!         list_all.clone(), reconcile.clone(), Some(controller::record_on_resource(store.clone())))
//! }));
//! ```
//!
//! # Supervision
//!
//! `supervise` runs a controller's loop, restarts it with backoff when it returns or
//! panics, reports each end in `Health` (so `/readyz` and systemd's `STATUS=` show a
//! dead controller while it waits to restart), and beats the controller's heartbeat on
//! every poll of its future. A loop must therefore wake at least every `IDLE_TICK`
//! even when idle; one that stops being polled for `stale_after(tick)` (a deadlock, a
//! blocked thread) is reported stuck and stops the systemd watchdog.
//!
//! # Test hook
//!
//! `HEARTH_FAULT_INJECT` (comma-separated) injects faults for the robustness tests;
//! it is not configuration and is never set in production:
//! `panic-controller:NAME` panics the `run` loop of controller NAME once, when it first
//! takes work; `stall-controller:NAME` makes it stop making progress at that point;
//! `panic-reconcile:NAME` makes every reconcile call of NAME panic;
//! `panic-driver:once` / `panic-driver:always` panics a pipeline run's driver once /
//! on every try (daemon/src/pipelines/controller.rs); `panic-watcher:once` panics the
//! scheduler's first workload watcher once its workload ended (daemon/src/scheduler).

use std::any::Any;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::health::{Health, Heartbeat};
use crate::store::Store;

/// The longest a controller loop sleeps between turns when idle, so its heartbeat
/// shows it alive.
pub const IDLE_TICK: Duration = Duration::from_secs(2);

/// Consecutive failures (errors or panics) of one key before the controller gives up
/// on it: with `retry_backoff` about 20 minutes of retrying.
pub const MAX_ATTEMPTS: u32 = 12;

/// The longest single requeue delay. Longer ones (a TTL of years) are cut to this; the
/// reconcile then computes the rest, so no deadline needs a far-future `Instant`.
const MAX_DELAY: Duration = Duration::from_secs(24 * 3600);

/// Backoff before retry number `attempts` (1-based) of a failed key: 1 s doubling,
/// at most 5 minutes.
pub fn retry_backoff(attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(9);
    Duration::from_secs(1u64 << exp).min(Duration::from_secs(300))
}

/// How long a part with an idle tick of `tick` may stay silent before it counts as
/// stuck: three ticks, at least 10 s (one slow store call is not a hang).
pub fn stale_after(tick: Duration) -> Duration {
    tick.saturating_mul(3).max(Duration::from_secs(10))
}

/// Keys in the order they arrived, each at most once (a job created before another
/// reaches the scheduler's FIFO queue first), and one deadline per key for delayed
/// requeues.
#[derive(Default)]
struct Pending {
    order: VecDeque<String>,
    present: HashSet<String>,
    deadlines: HashMap<String, Instant>,
    timers: BTreeSet<(Instant, String)>,
}

impl Pending {
    fn push(&mut self, key: &str) {
        if self.present.insert(key.to_string()) {
            self.order.push_back(key.to_string());
        }
    }

    fn clear_deadline(&mut self, key: &str) {
        if let Some(at) = self.deadlines.remove(key) {
            self.timers.remove(&(at, key.to_string()));
        }
    }

    fn set_deadline(&mut self, key: &str, at: Instant) {
        self.clear_deadline(key);
        self.deadlines.insert(key.to_string(), at);
        self.timers.insert((at, key.to_string()));
    }
}

/// A work queue with a delay queue: `add` queues a key now, `add_after` at a deadline,
/// and a key has at most one deadline (the earliest asked for), so repeated requeues
/// of the same key cost nothing more.
#[derive(Default)]
pub struct WorkQueue {
    // Every critical section below leaves `Pending` consistent before it can panic (it
    // only calls std collections), so a poisoned lock is recovered, never skipped.
    pending: Mutex<Pending>,
    notify: Notify,
}

fn deadline_after(delay: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(delay.min(MAX_DELAY)).unwrap_or(now)
}

impl WorkQueue {
    pub fn new() -> Arc<WorkQueue> {
        Arc::new(WorkQueue::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn add(&self, key: &str) {
        self.lock().push(key);
        self.notify.notify_one();
    }

    #[allow(
        dead_code,
        reason = "shared core API: the jobs, pipelines, serving and notebooks areas build on it"
    )]
    /// Queues `key` again after `delay` (backoff, deadlines, TTLs). A key keeps only
    /// its earliest deadline; no task is spawned per call.
    pub fn add_after(self: &Arc<Self>, key: &str, delay: Duration) {
        let at = deadline_after(delay);
        let earlier = {
            let mut pending = self.lock();
            match pending.deadlines.get(key) {
                Some(existing) if *existing <= at => false,
                _ => {
                    pending.set_deadline(key, at);
                    true
                }
            }
        };
        if earlier {
            self.notify.notify_one();
        }
    }

    /// After a reconcile: its answer replaces whatever deadline the key had, since it
    /// looked at the latest state (`None`: no deadline).
    fn requeue(&self, key: &str, delay: Option<Duration>) {
        let mut pending = self.lock();
        match delay {
            Some(delay) => pending.set_deadline(key, deadline_after(delay)),
            None => pending.clear_deadline(key),
        }
    }

    /// Keys queued now and keys whose deadline came, in that order.
    fn take(&self) -> Vec<String> {
        let now = Instant::now();
        let mut pending = self.lock();
        while let Some((at, key)) = pending.timers.first().cloned() {
            if at > now {
                break;
            }
            pending.timers.pop_first();
            pending.deadlines.remove(&key);
            pending.push(&key);
        }
        pending.present.clear();
        pending.order.drain(..).collect()
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.lock().timers.first().map(|(at, _)| *at)
    }

    #[allow(dead_code, reason = "tests and the controllers' own checks")]
    /// Keys waiting for a deadline (for tests and metrics).
    pub fn delayed(&self) -> usize {
        self.lock().deadlines.len()
    }
}

/// What happened to a key, for a controller's `Report` callback.
#[derive(Debug, Clone, PartialEq)]
pub enum Trouble {
    /// A reconcile failed (or panicked); it is retried after `retry_in`.
    Failed {
        message: String,
        panicked: bool,
        attempts: u32,
        retry_in: Duration,
    },
    /// `MAX_ATTEMPTS` failures in a row: the key is left alone until it is added again.
    GaveUp {
        message: String,
        panicked: bool,
        attempts: u32,
    },
    /// A reconcile succeeded after the controller had given up on the key.
    Recovered,
}

/// Called with a key and what happened to it; see `record_on_resource`.
pub type Report = Arc<dyn Fn(String, Trouble) -> BoxFuture<'static, ()> + Send + Sync>;

/// Condition type written on an object its controller gave up on.
pub const RECONCILE_FAILED: &str = "ReconcileFailed";

/// The `Report` for kinds in the `resources` table whose keys are uids: a `Warning`
/// event per failure (`ReconcileError` or `ReconcilePanicked`), a `ReconcileFailed`
/// condition once the controller gives up, removed when it recovers. A store error
/// here is logged: the report must not fail the controller.
pub fn record_on_resource(store: Store) -> Report {
    Arc::new(move |uid: String, trouble: Trouble| {
        let store = store.clone();
        async move {
            let written = store
                .call(move |conn| {
                    use crate::store::resources;
                    match &trouble {
                        Trouble::Failed {
                            message,
                            panicked,
                            attempts,
                            retry_in,
                        } => resources::record_event(
                            conn,
                            &uid,
                            "Warning",
                            reason(*panicked),
                            &format!(
                                "{message} (failure {attempts} of {MAX_ATTEMPTS}; retrying in {} s)",
                                retry_in.as_secs()
                            ),
                        ),
                        Trouble::GaveUp {
                            message,
                            panicked,
                            attempts,
                        } => {
                            let message = format!(
                                "the controller gave up after {attempts} failures in a row; the last: {message}. \
                                 Change or delete the object to try again."
                            );
                            resources::record_event(conn, &uid, "Warning", reason(*panicked), &message)?;
                            resources::set_condition(conn, &uid, RECONCILE_FAILED, Some((reason(*panicked), &message)))
                        }
                        Trouble::Recovered => resources::set_condition(conn, &uid, RECONCILE_FAILED, None),
                    }
                })
                .await;
            if let Err(e) = written {
                tracing::warn!(error = %e, "recording a reconcile failure on its object");
            }
        }
        .boxed()
    })
}

fn reason(panicked: bool) -> &'static str {
    if panicked {
        "ReconcilePanicked"
    } else {
        "ReconcileError"
    }
}

/// The text of a panic payload (`panic!` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Faults `HEARTH_FAULT_INJECT` asks for (see the module docs), read once.
pub(crate) fn fault(kind: &str, name: &str) -> bool {
    static FAULTS: OnceLock<Vec<String>> = OnceLock::new();
    FAULTS
        .get_or_init(|| {
            std::env::var("HEARTH_FAULT_INJECT")
                .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
                .unwrap_or_default()
        })
        .iter()
        .any(|f| f.split_once(':') == Some((kind, name)))
}

/// A one-shot fault fires only on the first controller run that reaches it, so the
/// restarted controller works.
pub(crate) fn fault_once(kind: &str, name: &str) -> bool {
    static FIRED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    if !fault(kind, name) {
        return false;
    }
    FIRED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(format!("{kind}:{name}"))
}

#[allow(
    dead_code,
    reason = "shared core API: the jobs, pipelines, serving and notebooks areas build on it"
)]
/// Runs a controller until the task is dropped. `list_all` yields every key for the
/// periodic resync; `reconcile` returns when to look at the key again, if ever.
/// Failures are retried with backoff and logged; see `run_reporting` to also record
/// them on the object and give up after a bound.
pub async fn run<L, LF, R, RF, E>(
    name: &'static str,
    health: Health,
    queue: Arc<WorkQueue>,
    resync: Duration,
    list_all: L,
    reconcile: R,
) where
    L: Fn() -> LF,
    LF: Future<Output = Result<Vec<String>, E>>,
    R: Fn(String) -> RF,
    RF: Future<Output = Result<Option<Duration>, E>>,
    E: std::fmt::Display,
{
    run_reporting(name, health, queue, resync, list_all, reconcile, None).await
}

/// Failure bookkeeping of one controller run, bounded by the keys that exist: keys
/// gone from the resync listing are dropped.
#[derive(Default)]
struct Failures {
    attempts: HashMap<String, u32>,
    given_up: HashSet<String>,
}

/// `run`, with each failure, give-up and recovery passed to `report` (module docs).
pub async fn run_reporting<L, LF, R, RF, E>(
    name: &'static str,
    health: Health,
    queue: Arc<WorkQueue>,
    resync: Duration,
    list_all: L,
    reconcile: R,
    report: Option<Report>,
) where
    L: Fn() -> LF,
    LF: Future<Output = Result<Vec<String>, E>>,
    R: Fn(String) -> RF,
    RF: Future<Output = Result<Option<Duration>, E>>,
    E: std::fmt::Display,
{
    health.set_if_absent(name, true, "running");
    let mut failures = Failures::default();
    let mut next_resync = Instant::now();
    loop {
        let mut keys = queue.take();
        if !keys.is_empty() {
            if fault_once("panic-controller", name) {
                panic!("injected fault (HEARTH_FAULT_INJECT=panic-controller:{name})");
            }
            if fault_once("stall-controller", name) {
                tracing::warn!(
                    controller = name,
                    "injected fault: the controller stops making progress"
                );
                std::future::pending::<()>().await;
            }
        }
        let explicit: HashSet<String> = keys.iter().cloned().collect();
        if Instant::now() >= next_resync {
            match list_all().await {
                Ok(all) => {
                    let live: HashSet<&String> = all.iter().collect();
                    failures.attempts.retain(|k, _| live.contains(k));
                    failures.given_up.retain(|k| live.contains(k));
                    // Keys waiting out a failure's backoff, or given up on, are not
                    // resynced: that would retry them early and uncounted.
                    keys.extend(
                        all.iter()
                            .filter(|k| {
                                !failures.given_up.contains(*k) && !failures.attempts.contains_key(*k)
                            })
                            .cloned(),
                    );
                }
                Err(e) => tracing::warn!(controller = name, error = %e, "listing for resync"),
            }
            next_resync = Instant::now() + resync;
        }
        let mut seen = HashSet::new();
        keys.retain(|key| seen.insert(key.clone()));
        for key in keys {
            if failures.given_up.contains(&key) && !explicit.contains(&key) {
                continue;
            }
            let outcome = if fault("panic-reconcile", name) {
                AssertUnwindSafe(async {
                    panic!("injected fault (HEARTH_FAULT_INJECT=panic-reconcile:{name})")
                })
                .catch_unwind()
                .await
            } else {
                AssertUnwindSafe(reconcile(key.clone())).catch_unwind().await
            };
            let (message, panicked) = match outcome {
                Ok(Ok(after)) => {
                    queue.requeue(&key, after);
                    failures.attempts.remove(&key);
                    if failures.given_up.remove(&key) {
                        if let Some(report) = &report {
                            report(key.clone(), Trouble::Recovered).await;
                        }
                    }
                    continue;
                }
                Ok(Err(e)) => (e.to_string(), false),
                Err(payload) => (
                    format!("reconcile panicked: {}", panic_message(payload.as_ref())),
                    true,
                ),
            };
            let attempts = {
                let n = failures.attempts.entry(key.clone()).or_insert(0);
                *n = n.saturating_add(1);
                *n
            };
            let trouble = if attempts >= MAX_ATTEMPTS {
                tracing::error!(controller = name, key = %key, attempts, error = %message, "reconcile keeps failing; giving up on this key");
                failures.given_up.insert(key.clone());
                queue.requeue(&key, None);
                Trouble::GaveUp {
                    message,
                    panicked,
                    attempts,
                }
            } else {
                let retry_in = retry_backoff(attempts);
                tracing::warn!(controller = name, key = %key, attempts, error = %message, "reconcile failed; retrying");
                queue.requeue(&key, Some(retry_in));
                Trouble::Failed {
                    message,
                    panicked,
                    attempts,
                    retry_in,
                }
            };
            if let Some(report) = &report {
                report(key.clone(), trouble).await;
            }
        }
        let mut wake = next_resync.min(Instant::now() + IDLE_TICK);
        if let Some(at) = queue.next_deadline() {
            wake = wake.min(at);
        }
        tokio::select! {
            _ = queue.notify.notified() => {}
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// Beats a heartbeat each time the inner future is polled: a loop that is polled is
/// making progress; one left pending (deadlocked) or blocking its thread is not.
struct Beating<F> {
    inner: Pin<Box<F>>,
    heartbeat: Arc<Heartbeat>,
}

impl<F: Future<Output = ()>> Future for Beating<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.heartbeat.beat();
        self.inner.as_mut().poll(cx)
    }
}

const RESTART_MIN: Duration = Duration::from_secs(1);
const RESTART_MAX: Duration = Duration::from_secs(60);
/// A run this long counts as healthy: the next restart starts from `RESTART_MIN` again.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Runs the loop `start` makes under supervision, forever: when it returns or panics
/// the end is logged and shown in `health` (not ready, with the reason and when it
/// restarts), and a new loop is started after a backoff (1 s doubling to 60 s, reset
/// after a run of 60 s). `tick` is the loop's longest idle wait (see module docs).
pub async fn supervise<F, Fut>(name: &'static str, health: Health, tick: Duration, start: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let heartbeat = health.heartbeat(name, stale_after(tick));
    let mut backoff = RESTART_MIN;
    let mut restarts: u32 = 0;
    let mut last_end = String::new();
    loop {
        if restarts == 0 {
            health.set(name, true, "running");
        } else {
            health.set(
                name,
                true,
                format!("running; restarted {restarts} times, last after it {last_end}"),
            );
        }
        heartbeat.beat();
        let began = Instant::now();
        let ran = AssertUnwindSafe(Beating {
            inner: Box::pin(start()),
            heartbeat: Arc::clone(&heartbeat),
        })
        .catch_unwind()
        .await;
        last_end = match ran {
            Ok(()) => "returned".to_string(),
            Err(payload) => format!("panicked: {}", panic_message(payload.as_ref())),
        };
        if began.elapsed() >= HEALTHY_RUN {
            backoff = RESTART_MIN;
        }
        restarts = restarts.saturating_add(1);
        tracing::error!(
            controller = name,
            restarts,
            "controller {last_end}; restarting in {} s",
            backoff.as_secs()
        );
        health.set(
            name,
            false,
            format!(
                "down: it {last_end}; restarting in {} s (restart {restarts})",
                backoff.as_secs()
            ),
        );
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2).min(RESTART_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[tokio::test(start_paused = true)]
    async fn one_deadline_per_key_the_earliest() {
        let queue = WorkQueue::new();
        for _ in 0..1000 {
            queue.add_after("a", Duration::from_secs(86_400));
        }
        queue.add_after("a", Duration::from_secs(5));
        queue.add_after("a", Duration::from_secs(60));
        queue.add_after("b", Duration::from_secs(10));
        assert_eq!(queue.delayed(), 2);
        assert!(queue.take().is_empty());
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(queue.take(), vec!["a".to_string()]);
        assert_eq!(queue.delayed(), 1);
        tokio::time::advance(Duration::from_secs(5)).await;
        queue.add("c");
        assert_eq!(queue.take(), vec!["c".to_string(), "b".to_string()]);
        assert_eq!(queue.delayed(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_far_deadline_is_cut_not_overflowed() {
        let queue = WorkQueue::new();
        queue.add_after("a", Duration::MAX);
        assert_eq!(queue.delayed(), 1);
        tokio::time::advance(MAX_DELAY + Duration::from_secs(1)).await;
        assert_eq!(queue.take(), vec!["a".to_string()]);
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        assert_eq!(retry_backoff(1), Duration::from_secs(1));
        assert_eq!(retry_backoff(2), Duration::from_secs(2));
        assert_eq!(retry_backoff(MAX_ATTEMPTS), Duration::from_secs(300));
        assert_eq!(retry_backoff(u32::MAX), Duration::from_secs(300));
    }

    /// A reconcile that panics for one key is caught, retried with backoff, reported,
    /// and given up on after `MAX_ATTEMPTS`; the other keys keep being reconciled and
    /// the controller never ends.
    #[tokio::test(start_paused = true)]
    async fn a_panicking_reconcile_is_caught_reported_and_given_up_on() {
        let queue = WorkQueue::new();
        let reports: Arc<Mutex<Vec<(String, Trouble)>>> = Arc::default();
        let good_runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let report: Report = {
            let reports = Arc::clone(&reports);
            Arc::new(move |key, trouble| {
                reports.lock().unwrap().push((key, trouble));
                async {}.boxed()
            })
        };
        let good = Arc::clone(&good_runs);
        let health = Health::default();
        let task = tokio::spawn(run_reporting(
            "test-controller",
            health.clone(),
            Arc::clone(&queue),
            Duration::from_secs(30),
            || async { Ok::<_, String>(vec!["bad".to_string(), "good".to_string()]) },
            move |key| {
                let good = Arc::clone(&good);
                async move {
                    if key == "bad" {
                        panic!("boom for {key}");
                    }
                    good.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, String>(None)
                }
            },
            Some(report),
        ));
        // Long enough for every backoff up to the give-up (about 20 minutes).
        for _ in 0..3000 {
            tokio::time::advance(Duration::from_secs(1)).await;
            tokio::task::yield_now().await;
        }
        assert!(!task.is_finished(), "the controller must not end");
        let reports = reports.lock().unwrap().clone();
        let bad: Vec<_> = reports.iter().filter(|(k, _)| k == "bad").collect();
        assert_eq!(bad.len() as u32, MAX_ATTEMPTS, "{reports:?}");
        assert!(matches!(
            &bad[0].1,
            Trouble::Failed { panicked: true, attempts: 1, message, .. } if message.contains("boom for bad")
        ));
        assert!(matches!(
            &bad[bad.len() - 1].1,
            Trouble::GaveUp { panicked: true, .. }
        ));
        assert!(
            good_runs.load(Ordering::SeqCst) > 10,
            "resync keeps reconciling the good key"
        );
        // An explicit add tries the key again (and it fails again: reported, no retry).
        queue.add("bad");
        tokio::time::advance(Duration::from_secs(1)).await;
        tokio::task::yield_now().await;
        assert_eq!(queue.delayed(), 0, "a key given up on has no deadline");
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn supervise_restarts_a_loop_that_panics_and_reports_it() {
        let health = Health::default();
        let starts = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = Arc::clone(&starts);
        let task = tokio::spawn(supervise("looper", health.clone(), IDLE_TICK, move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    panic!("first run dies");
                }
                std::future::pending::<()>().await
            }
        }));
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        let problems = health.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("panicked: first run dies"), "{problems:?}");
        tokio::time::advance(Duration::from_millis(1100)).await;
        tokio::task::yield_now().await;
        assert_eq!(starts.load(Ordering::SeqCst), 2);
        assert!(health.all_ready(), "{:?}", health.components());
        assert!(health.components()[0].detail.contains("restarted 1 times"));
        task.abort();
    }
}
