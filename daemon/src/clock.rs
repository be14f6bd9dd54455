//! Elapsed time since a stored wall-clock instant (a Job's `startTime`, a replica's
//! start), measured so that a step of the wall clock neither fires a deadline early
//! nor holds it back: the wall clock counts only the time before this process first
//! looked at the instant (all that survives a restart), the monotonic clock the rest.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// Elapsed times by key (a Job uid, a workload id). Callers `forget` a key once its
/// object no longer needs timing, so entries stay as many as the objects timed.
#[derive(Default)]
pub struct SinceClock {
    seen: Mutex<HashMap<String, Seen>>,
}

struct Seen {
    /// The instant the entry is for: a new one (a resumed Job) starts afresh.
    since: DateTime<Utc>,
    /// Time between `since` and when this process first looked (never negative).
    before: Duration,
    /// When this process first looked.
    at: Instant,
}

impl SinceClock {
    /// Time elapsed for `key` since `since`, by the clocks now.
    pub fn elapsed(&self, key: &str, since: DateTime<Utc>) -> Duration {
        self.elapsed_at(key, since, Utc::now(), Instant::now())
    }

    /// Time elapsed for `key` since `since`, with the wall clock reading `wall_now` and
    /// the monotonic one `mono_now` (passed in so tests can step them).
    pub fn elapsed_at(
        &self,
        key: &str,
        since: DateTime<Utc>,
        wall_now: DateTime<Utc>,
        mono_now: Instant,
    ) -> Duration {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let fresh = || Seen {
            since,
            before: wall_now.signed_duration_since(since).to_std().unwrap_or_default(),
            at: mono_now,
        };
        let entry = seen.entry(key.to_string()).or_insert_with(fresh);
        if entry.since != since {
            *entry = fresh();
        }
        entry
            .before
            .saturating_add(mono_now.saturating_duration_since(entry.at))
    }

    pub fn forget(&self, key: &str) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    #[test]
    fn elapsed_time_follows_the_monotonic_clock_not_wall_clock_steps() {
        let clock = SinceClock::default();
        let start = Utc::now();
        let mono = Instant::now();
        // Seen 5 s after it started (a restart): the wall clock gives the time before.
        let at = |wall: i64, mono_s: u64| {
            clock.elapsed_at(
                "key",
                start,
                start + TimeDelta::seconds(wall),
                mono + Duration::from_secs(mono_s),
            )
        };
        assert_eq!(at(5, 0), Duration::from_secs(5));
        // The wall clock jumps an hour ahead, then a day back: 10 s really passed.
        assert_eq!(at(3600, 10), Duration::from_secs(15));
        assert_eq!(at(-86_400, 20), Duration::from_secs(25));
        // A new start (a resumed Job) starts afresh.
        let resumed = start + TimeDelta::seconds(100);
        assert_eq!(
            clock.elapsed_at("key", resumed, resumed, mono + Duration::from_secs(30)),
            Duration::ZERO
        );
        clock.forget("key");
        // A start in the future (a clock stepped back since) counts as no time.
        assert_eq!(
            clock.elapsed_at("key", start, start - TimeDelta::seconds(60), mono),
            Duration::ZERO
        );
    }
}
