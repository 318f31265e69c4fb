//! Query-embedding cache: least recently used, each entry valid for a fixed time.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;

/// Default lifetime of a cached query embedding.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// LRU of query embeddings keyed by (model id, query text), with a time to live.
#[derive(Debug)]
pub struct QueryCache {
    entries: Mutex<LruCache<(String, String), (Instant, Arc<Vec<f32>>)>>,
    ttl: Duration,
}

impl QueryCache {
    /// A cache of at most `capacity` entries (at least 1) living `ttl` each.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        QueryCache {
            entries: Mutex::new(LruCache::new(cap)),
            ttl,
        }
    }

    /// The cached vector for `(model, query)` if it was stored less than the TTL before `now`.
    pub fn get(&self, model: &str, query: &str, now: Instant) -> Option<Arc<Vec<f32>>> {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let key = (model.to_string(), query.to_string());
        match e.get(&key) {
            Some((at, v)) if now.saturating_duration_since(*at) < self.ttl => Some(v.clone()),
            Some(_) => {
                e.pop(&key);
                None
            }
            None => None,
        }
    }

    /// Remember `vec` for `(model, query)` as of `now`.
    pub fn put(&self, model: &str, query: &str, vec: Arc<Vec<f32>>, now: Instant) {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.put((model.to_string(), query.to_string()), (now, vec));
    }

    /// Forget every entry (the model behind an id changed).
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Number of entries (expired ones included until looked up).
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_and_lru() {
        let c = QueryCache::new(2, Duration::from_secs(300));
        let t0 = Instant::now();
        c.put("m", "a", Arc::new(vec![1.0]), t0);
        assert!(c.get("m", "a", t0 + Duration::from_secs(299)).is_some());
        assert!(c.get("other-model", "a", t0).is_none());
        assert!(
            c.get("m", "a", t0 + Duration::from_secs(300)).is_none(),
            "expired at the TTL"
        );
        assert!(c.get("m", "a", t0).is_none(), "an expired entry is dropped");
        c.put("m", "a", Arc::new(vec![1.0]), t0);
        c.put("m", "b", Arc::new(vec![2.0]), t0);
        c.get("m", "a", t0); // a is now most recent
        c.put("m", "c", Arc::new(vec![3.0]), t0);
        assert!(c.get("m", "b", t0).is_none(), "least recently used evicted");
        assert!(c.get("m", "a", t0).is_some());
        assert_eq!(c.len(), 2);
    }
}
