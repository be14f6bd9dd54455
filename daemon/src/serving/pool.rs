//! The replicas of one revision as the data plane sees them: least-outstanding
//! balancing, the activator (requests wait here while no replica is ready, in a
//! bounded queue with a timeout), draining before a replica stops, and the load
//! figures the autoscaler samples.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::dataplane::RevisionMetrics;

#[derive(Debug)]
pub struct Replica {
    /// The workload id.
    pub id: String,
    pub addr: SocketAddr,
    /// `Host` for requests to it (`{address}`), formatted once: formatting an address
    /// on every request is a measurable share of the proxy's CPU.
    pub host: hyper::header::HeaderValue,
    pub outstanding: AtomicUsize,
    pub draining: AtomicBool,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AcquireError {
    #[error("revision {0} has {1} requests waiting for a replica already")]
    QueueFull(String, usize),
    #[error("no replica of revision {0} became ready within {1:?}")]
    Timeout(String, Duration),
}

/// A request's hold on a replica; dropping it releases the slot and wakes a waiter.
pub struct Lease {
    pool: Arc<RevisionPool>,
    pub replica: Arc<Replica>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.replica.outstanding.fetch_sub(1, Ordering::SeqCst);
        self.pool.in_flight.fetch_sub(1, Ordering::SeqCst);
        // A waiter counts itself in `queued` before it looks for a slot, so with none
        // counted nobody can miss this release; most requests skip the wake-up.
        if self.pool.queued.load(Ordering::SeqCst) > 0 {
            self.pool.changed.notify_waiters();
        }
    }
}

#[derive(Debug)]
pub struct RevisionPool {
    pub revision: String,
    replicas: Mutex<Vec<Arc<Replica>>>,
    /// Per-replica concurrency limit (`containerConcurrency`); 0 = none.
    container_concurrency: AtomicUsize,
    changed: Notify,
    /// Requests inside a replica now.
    pub in_flight: AtomicUsize,
    /// Requests held by the activator now.
    pub queued: AtomicUsize,
    /// Every request admitted to this revision, for the RPS metric.
    pub requests_total: AtomicU64,
    last_request: Mutex<Option<Instant>>,
    /// Woken when a request waits at zero ready replicas: the scale-from-zero signal.
    pub demand: Arc<Notify>,
    /// This revision's metric handles, resolved once rather than per request.
    pub metrics: RevisionMetrics,
}

impl RevisionPool {
    pub fn new(
        revision: &str,
        container_concurrency: usize,
        demand: Arc<Notify>,
        metrics: RevisionMetrics,
    ) -> Arc<RevisionPool> {
        Arc::new(RevisionPool {
            revision: revision.to_string(),
            replicas: Mutex::new(Vec::new()),
            container_concurrency: AtomicUsize::new(container_concurrency),
            changed: Notify::new(),
            in_flight: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            requests_total: AtomicU64::new(0),
            last_request: Mutex::new(None),
            demand,
            metrics,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Replica>>> {
        self.replicas.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ready replicas that take new requests.
    pub fn serving(&self) -> usize {
        self.lock()
            .iter()
            .filter(|r| !r.draining.load(Ordering::SeqCst))
            .count()
    }

    pub fn replica_ids(&self) -> Vec<String> {
        self.lock().iter().map(|r| r.id.clone()).collect()
    }

    pub fn last_request(&self) -> Option<Instant> {
        *self.last_request.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a ready replica (idempotent on id) and releases held requests.
    pub fn add_ready(&self, id: &str, addr: SocketAddr) {
        {
            let mut replicas = self.lock();
            if replicas.iter().any(|r| r.id == id) {
                return;
            }
            replicas.push(Arc::new(Replica {
                id: id.to_string(),
                addr,
                host: hyper::header::HeaderValue::from_str(&addr.to_string())
                    .unwrap_or_else(|_| hyper::header::HeaderValue::from_static("localhost")),
                outstanding: AtomicUsize::new(0),
                draining: AtomicBool::new(false),
            }));
        }
        self.changed.notify_waiters();
    }

    /// Stops routing to a replica; returns its outstanding requests (0: safe to stop).
    pub fn drain(&self, id: &str) -> usize {
        let replicas = self.lock();
        match replicas.iter().find(|r| r.id == id) {
            Some(r) => {
                r.draining.store(true, Ordering::SeqCst);
                r.outstanding.load(Ordering::SeqCst)
            }
            None => 0,
        }
    }

    /// Forgets a replica (after it stopped or died).
    pub fn remove(&self, id: &str) {
        self.lock().retain(|r| r.id != id);
        self.changed.notify_waiters();
    }

    pub fn set_container_concurrency(&self, limit: usize) {
        self.container_concurrency.store(limit, Ordering::SeqCst);
    }

    /// The ready, non-draining replica with the fewest outstanding requests and room
    /// under `containerConcurrency`.
    fn try_pick(self: &Arc<Self>) -> Option<Lease> {
        let limit = self.container_concurrency.load(Ordering::SeqCst);
        let replicas = self.lock();
        let best = replicas
            .iter()
            .filter(|r| !r.draining.load(Ordering::SeqCst))
            .filter(|r| limit == 0 || r.outstanding.load(Ordering::SeqCst) < limit)
            .min_by_key(|r| r.outstanding.load(Ordering::SeqCst))?;
        best.outstanding.fetch_add(1, Ordering::SeqCst);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Some(Lease {
            pool: Arc::clone(self),
            replica: Arc::clone(best),
        })
    }

    /// A replica for one request; holds the request (the activator) while none is
    /// ready or all are at their concurrency limit.
    pub async fn acquire(
        self: &Arc<Self>,
        queue_limit: usize,
        timeout: Duration,
    ) -> Result<Lease, AcquireError> {
        self.requests_total.fetch_add(1, Ordering::SeqCst);
        *self.last_request.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        if let Some(lease) = self.try_pick() {
            return Ok(lease);
        }
        let waiting = self.queued.fetch_add(1, Ordering::SeqCst);
        let _unqueue = Unqueue(self);
        if waiting >= queue_limit {
            return Err(AcquireError::QueueFull(self.revision.clone(), waiting));
        }
        self.demand.notify_one();
        let now = tokio::time::Instant::now();
        // Past the clock's range means no deadline in practice; waiting out `now`
        // instead would fail every request at once.
        let deadline = now
            .checked_add(timeout)
            .or_else(|| now.checked_add(Duration::from_secs(crate::model::strict::MAX_SECONDS)))
            .unwrap_or(now);
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(lease) = self.try_pick() {
                return Ok(lease);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(AcquireError::Timeout(self.revision.clone(), timeout));
            }
        }
    }
}

struct Unqueue<'a>(&'a RevisionPool);

impl Drop for Unqueue<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn least_outstanding_activator_and_drain() {
        let metrics = super::super::dataplane::ServingMetrics::new().for_revision("ns", "svc", "r-00001");
        let pool = RevisionPool::new("r-00001", 0, Arc::new(Notify::new()), metrics);
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        // Held at zero replicas until one is ready.
        let waiter = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move {
                pool.acquire(10, Duration::from_secs(5))
                    .await
                    .map(|l| l.replica.id.clone())
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(pool.queued.load(Ordering::SeqCst), 1);
        pool.add_ready("a", addr);
        assert_eq!(waiter.await.unwrap(), Ok("a".to_string()));
        pool.add_ready("b", addr);
        let first = pool.acquire(10, Duration::from_secs(1)).await.unwrap();
        let second = pool.acquire(10, Duration::from_secs(1)).await.unwrap();
        assert_ne!(
            first.replica.id, second.replica.id,
            "least outstanding spreads load"
        );
        assert_eq!(pool.drain("a"), 1);
        drop(first);
        drop(second);
        for _ in 0..3 {
            assert_eq!(
                pool.acquire(10, Duration::from_secs(1)).await.unwrap().replica.id,
                "b"
            );
        }
        pool.remove("b");
        pool.remove("a");
        let err = pool.acquire(10, Duration::from_millis(20)).await.err();
        assert!(matches!(err, Some(AcquireError::Timeout(..))));
        assert_eq!(
            pool.acquire(0, Duration::from_millis(20)).await.err(),
            Some(AcquireError::QueueFull("r-00001".into(), 0))
        );
    }
}
