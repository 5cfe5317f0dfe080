//! A cache of weak references: entries live exactly as long as someone else holds them.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

/// Maps keys to values owned elsewhere, stored as [`Weak`]: an entry vanishes when the
/// last [`Arc`] to its value is dropped. Good for deduplicating live objects (one parsed
/// template per name while anyone uses it) without bounding or expiring anything.
///
/// `V` may be unsized (`WeakCache<K, str>`). Dead entries are dropped on [`get`](Self::get), by [`purge`](Self::purge), and by an
/// amortised sweep when inserts double the map since the last sweep.
///
/// ```
/// use std::sync::Arc;
/// use cortex_cache::WeakCache;
///
/// let cache = WeakCache::new();
/// let value = Arc::new("template".to_owned());
/// cache.insert("t", Arc::clone(&value));
/// assert_eq!(cache.get("t").as_deref(), Some(&"template".to_owned()));
/// drop(value);
/// assert!(cache.get("t").is_none());
/// ```
#[derive(Debug)]
pub struct WeakCache<K, V: ?Sized> {
    inner: Mutex<Inner<K, V>>,
}

/// A snapshot of a [`WeakCache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WeakCacheStats {
    /// Entries in the map, dead ones not yet swept included.
    pub entries: usize,
    /// Entries whose value is still alive.
    pub live: usize,
}

#[derive(Debug)]
struct Inner<K, V: ?Sized> {
    map: HashMap<K, Weak<V>, foldhash::fast::RandomState>,
    sweep_at: usize,
}

const MIN_SWEEP: usize = 64;

impl<K: Hash + Eq, V: ?Sized> Default for WeakCache<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq, V: ?Sized> WeakCache<K, V> {
    /// An empty cache.
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                map: HashMap::default(),
                sweep_at: MIN_SWEEP,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<K, V>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value under `key` if it is still alive; a dead entry is removed.
    pub fn get<Q>(&self, key: &Q) -> Option<Arc<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut inner = self.lock();
        let found = inner.map.get(key)?.upgrade();
        if found.is_none() {
            inner.map.remove(key);
        }
        found
    }

    /// Store a weak reference to `value` under `key`, replacing any previous entry.
    pub fn insert(&self, key: K, value: Arc<V>) {
        let mut inner = self.lock();
        inner.map.insert(key, Arc::downgrade(&value));
        if inner.map.len() >= inner.sweep_at {
            inner.map.retain(|_, v| v.strong_count() > 0);
            inner.sweep_at = (inner.map.len() * 2).max(MIN_SWEEP);
        }
    }

    /// Remove `key`, returning its value if it was alive.
    pub fn remove<Q>(&self, key: &Q) -> Option<Arc<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lock().map.remove(key)?.upgrade()
    }

    /// Live entries (walks the map).
    pub fn len(&self) -> usize {
        self.lock()
            .map
            .values()
            .filter(|v| v.strong_count() > 0)
            .count()
    }

    /// Whether no entry is alive.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries held and, of those, the ones still alive (walks the map).
    pub fn stats(&self) -> WeakCacheStats {
        let inner = self.lock();
        WeakCacheStats {
            entries: inner.map.len(),
            live: inner.map.values().filter(|v| v.strong_count() > 0).count(),
        }
    }

    /// Drop every dead entry; returns how many were dropped.
    pub fn purge(&self) -> usize {
        let mut inner = self.lock();
        let before = inner.map.len();
        inner.map.retain(|_, v| v.strong_count() > 0);
        inner.sweep_at = (inner.map.len() * 2).max(MIN_SWEEP);
        before - inner.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amortised_sweep_bounds_dead_entries() {
        let cache = WeakCache::new();
        for k in 0..10_000u32 {
            cache.insert(k, Arc::new(k));
        }
        assert!(cache.lock().map.len() <= MIN_SWEEP);
        assert_eq!(cache.len(), 0);
        let alive = Arc::new(1);
        cache.insert(1, Arc::clone(&alive));
        let stats = cache.stats();
        assert_eq!(stats.live, 1);
        assert!(stats.entries >= 1 && stats.entries <= MIN_SWEEP + 1);
    }
}
