//! Readiness of the daemon's parts. Each part (store, runtime, each controller)
//! reports itself; `/readyz` and the systemd status read the sum.
//!
//! Controllers also keep a heartbeat (see `controller::supervise`): a part whose
//! heartbeat is older than its `stale_after` counts as stuck, is reported not ready,
//! and stops the systemd watchdog (`progress_fresh`). Heartbeats use the monotonic
//! clock, so a wall-clock step never makes a part look stuck or fresh.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct ComponentStatus {
    pub name: String,
    pub ready: bool,
    pub detail: String,
}

/// The last time a part made progress, as milliseconds since `Health` was made.
/// Atomic, so a beat on every poll of a controller's future costs no lock.
#[derive(Debug)]
pub struct Heartbeat {
    base: Instant,
    last_ms: AtomicU64,
    stale_after: Duration,
}

impl Heartbeat {
    pub fn beat(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// How long since the last beat.
    pub fn silence(&self) -> Duration {
        let now = self.base.elapsed();
        now.saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }

    fn stale(&self) -> bool {
        self.silence() > self.stale_after
    }
}

struct Inner {
    base: Instant,
    components: RwLock<BTreeMap<String, ComponentStatus>>,
    heartbeats: RwLock<BTreeMap<String, Arc<Heartbeat>>>,
}

#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            inner: Arc::new(Inner {
                base: Instant::now(),
                components: RwLock::new(BTreeMap::new()),
                heartbeats: RwLock::new(BTreeMap::new()),
            }),
        }
    }
}

impl Health {
    // The maps are only ever replaced entry by entry, so a panic while one was held
    // leaves them consistent: a poisoned lock is recovered, never skipped (skipping would
    // freeze readiness at its last value).
    pub fn set(&self, name: &str, ready: bool, detail: impl Into<String>) {
        let status = ComponentStatus {
            name: name.to_string(),
            ready,
            detail: detail.into(),
        };
        self.inner
            .components
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_string(), status);
    }

    /// `set`, unless `name` already reported itself (a supervisor did, with more detail).
    pub fn set_if_absent(&self, name: &str, ready: bool, detail: impl Into<String>) {
        let mut map = self
            .inner
            .components
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(name.to_string()).or_insert_with(|| ComponentStatus {
            name: name.to_string(),
            ready,
            detail: detail.into(),
        });
    }

    /// The heartbeat of `name`, made (and beaten once) on first use: a part that stays
    /// silent for longer than `stale_after` is reported stuck.
    pub fn heartbeat(&self, name: &str, stale_after: Duration) -> Arc<Heartbeat> {
        let mut beats = self
            .inner
            .heartbeats
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let beat = beats.entry(name.to_string()).or_insert_with(|| {
            Arc::new(Heartbeat {
                base: self.inner.base,
                last_ms: AtomicU64::new(0),
                stale_after,
            })
        });
        beat.beat();
        Arc::clone(beat)
    }

    /// Each part as it reported itself, except that a part whose heartbeat went stale
    /// is not ready and says for how long it made no progress.
    pub fn components(&self) -> Vec<ComponentStatus> {
        let beats = self
            .inner
            .heartbeats
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let map = self
            .inner
            .components
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        map.values()
            .map(|c| match beats.get(&c.name) {
                Some(beat) if c.ready && beat.stale() => ComponentStatus {
                    name: c.name.clone(),
                    ready: false,
                    detail: format!(
                        "stuck: no progress for {} s (was: {})",
                        beat.silence().as_secs(),
                        c.detail
                    ),
                },
                _ => c.clone(),
            })
            .collect()
    }

    pub fn all_ready(&self) -> bool {
        let components = self.components();
        !components.is_empty() && components.iter().all(|c| c.ready)
    }

    /// "name: detail" of each part that is not ready.
    pub fn problems(&self) -> Vec<String> {
        self.components()
            .into_iter()
            .filter(|c| !c.ready)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect()
    }

    /// True while every part with a heartbeat beat recently enough; the systemd watchdog
    /// is fed only then, so a controller that stops making progress gets the daemon
    /// restarted by systemd instead of hanging unnoticed.
    pub fn progress_fresh(&self) -> bool {
        self.inner
            .heartbeats
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .all(|b| !b.stale())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_heartbeat_makes_its_part_stuck_and_stops_progress() {
        let health = Health::default();
        health.set("c", true, "running");
        let beat = health.heartbeat("c", Duration::from_millis(50));
        assert!(health.all_ready());
        assert!(health.progress_fresh());
        std::thread::sleep(Duration::from_millis(80));
        assert!(!health.progress_fresh());
        let c = &health.components()[0];
        assert!(!c.ready);
        assert!(c.detail.starts_with("stuck: no progress"), "{}", c.detail);
        beat.beat();
        assert!(health.all_ready());
        assert!(health.progress_fresh());
    }

    #[test]
    fn a_poisoned_lock_is_recovered_not_skipped() {
        let health = Health::default();
        health.set("c", true, "running");
        let poisoner = health.clone();
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.inner.components.write();
            panic!("poison the lock");
        })
        .join();
        health.set("c", false, "down");
        assert_eq!(health.problems(), vec!["c: down".to_string()]);
    }
}
