//! The opt-in response cache: successful answers keyed by revision, path and request
//! body, least recently used evicted first, each entry living `ttl`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq)]
pub struct Cached {
    pub body: bytes::Bytes,
    /// `Inference-Header-Content-Length` of a binary answer.
    pub header_len: Option<usize>,
    pub content_type: hyper::header::HeaderValue,
}

struct Entry {
    value: Cached,
    stored: Instant,
    used: u64,
}

pub struct ResponseCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<(HashMap<[u8; 32], Entry>, u64)>,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

pub fn key(revision: &str, path: &str, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(revision.as_bytes());
    h.update([0]);
    h.update(path.as_bytes());
    h.update([0]);
    h.update(body);
    h.finalize().into()
}

impl ResponseCache {
    pub fn new(ttl: Duration, capacity: usize) -> ResponseCache {
        ResponseCache {
            ttl,
            capacity: capacity.max(1),
            entries: Mutex::new((HashMap::new(), 0)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn get(&self, key: &[u8; 32]) -> Option<Cached> {
        let mut guard = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (map, clock) = &mut *guard;
        *clock += 1;
        let now = *clock;
        let found = match map.get_mut(key) {
            Some(e) if e.stored.elapsed() < self.ttl => {
                e.used = now;
                Some(e.value.clone())
            }
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        };
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub fn put(&self, key: [u8; 32], value: Cached) {
        let mut guard = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (map, clock) = &mut *guard;
        *clock += 1;
        if map.len() >= self.capacity && !map.contains_key(&key) {
            // O(n) eviction keeps the structure trivial; capacities are ~1000 entries.
            if let Some(oldest) = map.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(
            key,
            Entry {
                value,
                stored: Instant::now(),
                used: *clock,
            },
        );
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str) -> Cached {
        Cached {
            body: bytes::Bytes::from(s.to_string()),
            header_len: None,
            content_type: hyper::header::HeaderValue::from_static("application/json"),
        }
    }

    #[test]
    fn lru_ttl_and_counters() {
        let cache = ResponseCache::new(Duration::from_millis(200), 2);
        let (a, b, c) = (
            key("r1", "/p", b"a"),
            key("r1", "/p", b"b"),
            key("r1", "/p", b"c"),
        );
        assert_ne!(key("r1", "/p", b"a"), key("r2", "/p", b"a"), "keyed by revision");
        cache.put(a, value("A"));
        cache.put(b, value("B"));
        assert_eq!(cache.get(&a), Some(value("A")));
        cache.put(c, value("C"));
        assert_eq!(cache.get(&b), None, "b was least recently used");
        assert_eq!(cache.len(), 2);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(cache.get(&a), None, "expired");
        assert_eq!(
            (
                cache.hits.load(Ordering::Relaxed),
                cache.misses.load(Ordering::Relaxed)
            ),
            (1, 2)
        );
    }
}
