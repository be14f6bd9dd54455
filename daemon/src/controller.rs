//! The shape every controller shares, after kube-rs: a work queue of resource keys,
//! a reconcile function that is level-triggered and idempotent, and a loop that runs
//! it for queued keys, for keys whose requeue time came, and for every key on a
//! periodic resync. Tests call the reconcile function directly to step a controller.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::health::Health;

/// Keys in the order they arrived, each at most once: a job created before another
/// reaches the scheduler's FIFO queue first.
#[derive(Default)]
struct Pending {
    order: Vec<String>,
    present: HashSet<String>,
}

#[derive(Default)]
pub struct WorkQueue {
    pending: Mutex<Pending>,
    notify: Notify,
}

impl WorkQueue {
    pub fn new() -> Arc<WorkQueue> {
        Arc::new(WorkQueue::default())
    }

    pub fn add(&self, key: &str) {
        if let Ok(mut pending) = self.pending.lock() {
            if pending.present.insert(key.to_string()) {
                pending.order.push(key.to_string());
            }
        }
        self.notify.notify_one();
    }

    /// Queues `key` again after `delay` (backoff, deadlines, TTLs).
    pub fn add_after(self: &Arc<Self>, key: &str, delay: Duration) {
        let queue = Arc::clone(self);
        let key = key.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.add(&key);
        });
    }

    fn take(&self) -> Vec<String> {
        match self.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending).order,
            Err(_) => Vec::new(),
        }
    }
}

/// Runs a controller until the task is dropped. `list_all` yields every key for the
/// periodic resync; `reconcile` returns when to look at the key again, if ever.
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
    health.set(name, true, "running");
    let mut next_resync = tokio::time::Instant::now();
    loop {
        let mut keys = queue.take();
        if tokio::time::Instant::now() >= next_resync {
            match list_all().await {
                Ok(all) => keys.extend(all),
                Err(e) => tracing::warn!(controller = name, error = %e, "listing for resync"),
            }
            next_resync = tokio::time::Instant::now() + resync;
        }
        let mut seen = HashSet::new();
        keys.retain(|key| seen.insert(key.clone()));
        for key in keys {
            match reconcile(key.clone()).await {
                Ok(Some(after)) => queue.add_after(&key, after),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(controller = name, key = %key, error = %e, "reconcile failed; retrying");
                    queue.add_after(&key, Duration::from_secs(1));
                }
            }
        }
        tokio::select! {
            _ = queue.notify.notified() => {}
            _ = tokio::time::sleep_until(next_resync) => {}
        }
    }
}
