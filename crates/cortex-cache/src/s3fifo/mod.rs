//! The typed, bounded, sharded in-memory cache.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash, Hasher};
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use cortex_metrics::{Counter, Metrics};
use serde::{Deserialize, Serialize};

mod config;
mod shard;

pub use self::config::S3FifoConfig;
use self::shard::{Lookup, Shard};
use crate::stats;
use crate::{Error, Result};

/// Smallest shard the automatic shard count allows: below this the small/main split of
/// S3-FIFO gets too coarse and the hit ratio drops.
const MIN_SHARD_CAPACITY: usize = 64;

/// A typed in-memory cache: at most `capacity` entries, optional per-entry TTL, sharded
/// for concurrency.
///
/// # Policy
///
/// Eviction is **S3-FIFO** (Yang et al., SOSP 2023), not LRU: new keys enter a small FIFO (3 % of each shard); keys read while there move to
/// a main FIFO run as a CLOCK with a 2-bit frequency; keys evicted unread from the small
/// FIFO are remembered in a ghost FIFO of hashes, and come back straight into main. It is
/// scan-resistant (a burst of one-hit keys cannot flush the hot set) and beats LRU's hit
/// ratio on skewed (Zipf) workloads, while a hit only bumps a counter instead of
/// relinking a list. Entries are stored in a slab per shard, so inserts do not allocate
/// once a shard is full.
///
/// # Values
///
/// [`get`](Self::get) returns a clone of the value: store `Arc<T>` for anything larger
/// than a few words so a hit costs a reference-count increment.
///
/// # Expiry
///
/// An entry with a TTL (from [`insert_with_ttl`](Self::insert_with_ttl) or the builder's
/// default) is a miss once expired and is removed when next touched or when the eviction
/// hand reaches it; there is no background task. [`len`](Self::len) may count expired
/// entries not yet touched.
///
/// # Concurrency
///
/// Keys are spread over shards by hash, each an `RwLock` around plain data (critical
/// sections are a probe and a few writes). A hit takes the shard's *read* lock (the
/// frequency bump is a relaxed atomic), so hits on one shard do not serialise. The default shard count is the next power of
/// two >= 4 x available CPUs, lowered so that each shard holds at least 64 entries.
/// Share the cache with `Arc<S3FifoCache<K, V>>`.
///
/// ```
/// use std::time::Duration;
/// use cortex_cache::S3FifoCache;
///
/// let cache = S3FifoCache::builder().capacity(10_000).build()?;
/// cache.insert(1u64, "one".to_owned());
/// assert_eq!(cache.get(&1).as_deref(), Some("one"));
/// let v = cache.get_or_insert_with(2, || "two".to_owned());
/// assert_eq!(v, "two");
/// cache.insert_with_ttl(3, "three".to_owned(), Duration::from_secs(60));
/// assert_eq!(cache.stats().hits, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct S3FifoCache<K, V> {
    shards: Box<[PaddedShard<K, V>]>,
    mask: usize,
    hasher: foldhash::fast::RandomState,
    default_ttl: Option<Duration>,
    capacity: usize,
    /// Thread-sharded (one cache line per thread slot), so counting a hit does not add a
    /// contended write to a hot shard.
    hits: Counter,
    misses: Counter,
    metrics: Option<MetricsHook>,
    /// Entries per shard for the level gauges, only when built with a registry.
    levels: Option<Arc<Levels>>,
}

/// What the level gauges of an [`S3FifoCache`] read: each shard's entry count, stored
/// when its write lock is released (only writes change it), so a scrape reads atomics
/// and never waits for a shard lock. Not generic, so the registry can keep it without
/// the key and value types being `Send + Sync + 'static`.
#[derive(Debug)]
struct Levels {
    /// One slot per shard, each on its own cache lines as the shards are.
    entries: Box<[Padded<AtomicUsize>]>,
    /// [`Shard::ENTRY_BYTES`] of the cache's key and value types.
    entry_bytes: usize,
}

impl Levels {
    fn entries(&self) -> usize {
        self.entries.iter().map(|e| e.0.load(Relaxed)).sum()
    }
}

/// A shard's write lock held; on release, the shard's entry count is stored into the
/// levels (still under the lock, so two releases cannot store out of order).
struct ShardWrite<'a, K, V> {
    guard: RwLockWriteGuard<'a, Shard<K, V>>,
    level: Option<&'a AtomicUsize>,
}

impl<K, V> Deref for ShardWrite<'_, K, V> {
    type Target = Shard<K, V>;

    fn deref(&self) -> &Shard<K, V> {
        &self.guard
    }
}

impl<K, V> DerefMut for ShardWrite<'_, K, V> {
    fn deref_mut(&mut self) -> &mut Shard<K, V> {
        &mut self.guard
    }
}

impl<K, V> Drop for ShardWrite<'_, K, V> {
    fn drop(&mut self) {
        if let Some(level) = self.level {
            level.store(self.guard.len(), Relaxed);
        }
    }
}

/// Keeps each shard lock on its own cache lines so two threads on two shards do not
/// contend.
#[derive(Debug)]
#[repr(align(128))]
struct Padded<T>(T);

type PaddedShard<K, V> = Padded<RwLock<Shard<K, V>>>;

/// Counters in a [`Metrics`] registry, mirrored on every operation when configured.
#[derive(Debug)]
struct MetricsHook {
    hits: Arc<Counter>,
    misses: Arc<Counter>,
    evictions: Arc<Counter>,
}

impl<K, V> std::fmt::Debug for S3FifoCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3FifoCache")
            .field("capacity", &self.capacity)
            .field("shards", &self.shards.len())
            .field("default_ttl", &self.default_ttl)
            .field("hits", &self.hits.total())
            .field("misses", &self.misses.total())
            .field("metrics", &self.metrics.is_some())
            .finish_non_exhaustive()
    }
}

/// A snapshot of a cache's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3FifoStats {
    /// Lookups that found a live entry.
    pub hits: u64,
    /// Lookups that found nothing or an expired entry.
    pub misses: u64,
    /// Inserts, including replacements.
    pub inserts: u64,
    /// Live entries evicted to make room.
    pub evictions: u64,
    /// Expired entries removed.
    pub expirations: u64,
    /// Entries held now (may include expired entries not yet touched).
    pub entries: u64,
    /// The maximum number of entries.
    pub capacity: u64,
}

impl S3FifoStats {
    /// `hits / (hits + misses)`, or 0 before any lookup.
    pub fn hit_ratio(&self) -> f64 {
        let lookups = self.hits + self.misses;
        if lookups == 0 {
            0.0
        } else {
            self.hits as f64 / lookups as f64
        }
    }
}

/// Builds an [`S3FifoCache`].
#[must_use]
pub struct S3FifoCacheBuilder<K, V> {
    capacity: usize,
    ttl: Option<Duration>,
    shards: Option<usize>,
    metrics: Option<(Metrics, String)>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> std::fmt::Debug for S3FifoCacheBuilder<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3FifoCacheBuilder")
            .field("capacity", &self.capacity)
            .field("ttl", &self.ttl)
            .field("shards", &self.shards)
            .field("metrics", &self.metrics.as_ref().map(|(_, name)| name))
            .finish()
    }
}

impl<K, V> Default for S3FifoCacheBuilder<K, V> {
    fn default() -> Self {
        Self {
            capacity: 0,
            ttl: None,
            shards: None,
            metrics: None,
            _types: PhantomData,
        }
    }
}

impl<K: Hash + Eq, V> S3FifoCacheBuilder<K, V> {
    /// Maximum number of entries. Required, must be >= 1 (and < 2^32 per shard).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Take capacity, TTL and shards from `config` (e.g. [`S3FifoConfig::from_env`]).
    pub fn config(mut self, config: &S3FifoConfig) -> Self {
        self.capacity = config.capacity;
        self.ttl = config.ttl;
        self.shards = config.shards;
        self
    }

    /// TTL applied by [`S3FifoCache::insert`]. Default: none (entries never expire).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Number of shards, rounded up to a power of two and lowered to at most `capacity`.
    /// Default: next power of two >= 8 x available CPUs, lowered so that each shard holds
    /// at least 64 entries.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// Record into `metrics` under the label `cache="<name>"`: hits, misses and
    /// evictions as the counters `cache.hits`, `cache.misses` and `cache.evictions`, and
    /// the gauges `cache.entries` ([`S3FifoCache::len`]) and `cache.size_bytes` (entries
    /// times the bytes one takes in the cache's own structures: key, value and
    /// bookkeeping held inline; what keys and values own on the heap, such as a
    /// `String`'s text or an `Arc`'s target, is not seen). Exported as
    /// `cortex_cache_hits_total{cache="<name>"}`, `cortex_cache_entries{cache="<name>"}`
    /// and so on; the gauges are read when scraped and read `NaN` once the cache is
    /// dropped. Default: not recorded.
    ///
    /// ```
    /// use cortex_cache::S3FifoCache;
    /// use cortex_metrics::Metrics;
    ///
    /// let registry = Metrics::new();
    /// let users = S3FifoCache::builder().capacity(100).metrics(&registry, "users").build()?;
    /// users.insert(1u64, 10u64);
    /// users.get(&1);
    /// let text = registry.prometheus();
    /// assert!(text.contains("cortex_cache_hits_total{cache=\"users\"} 1\n"));
    /// assert!(text.contains("cortex_cache_entries{cache=\"users\"} 1\n"));
    /// drop(users);
    /// assert!(registry.prometheus().contains("cortex_cache_entries{cache=\"users\"} NaN\n"));
    /// # Ok::<(), cortex_cache::Error>(())
    /// ```
    pub fn metrics(mut self, metrics: &Metrics, name: &str) -> Self {
        self.metrics = Some((metrics.clone(), name.to_owned()));
        self
    }

    /// Build the cache.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a capacity of 0, a shard count of 0, or a capacity that
    /// leaves a shard with 2^32 entries or more.
    pub fn build(self) -> Result<S3FifoCache<K, V>> {
        let invalid = |key, value: usize, reason: &str| Error::InvalidConfig {
            key,
            value: value.to_string(),
            reason: reason.to_owned(),
        };
        let capacity = self.capacity;
        if capacity == 0 {
            return Err(invalid("capacity", 0, "must be at least 1"));
        }
        let shards = match self.shards {
            Some(0) => return Err(invalid("shards", 0, "must be at least 1")),
            Some(n) => n.checked_next_power_of_two().unwrap_or(1 << 16),
            None => {
                let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
                let by_size = prev_power_of_two((capacity / MIN_SHARD_CAPACITY).max(1));
                (cpus * 8).next_power_of_two().min(by_size)
            }
        };
        let shards = shards.min(prev_power_of_two(capacity));
        let (base, extra) = (capacity / shards, capacity % shards);
        if base + usize::from(extra > 0) >= u32::MAX as usize {
            return Err(invalid(
                "capacity",
                capacity,
                "too large: a shard would hold 2^32 entries or more; add shards",
            ));
        }
        let shards: Box<[_]> = (0..shards)
            .map(|i| Padded(RwLock::new(Shard::new(base + usize::from(i < extra)))))
            .collect();
        let mut levels = None;
        let metrics = self.metrics.map(|(m, name)| {
            let shard_levels = Arc::new(Levels {
                entries: (0..shards.len())
                    .map(|_| Padded(AtomicUsize::new(0)))
                    .collect(),
                entry_bytes: Shard::<K, V>::ENTRY_BYTES,
            });
            stats::register_levels(
                &m,
                &name,
                &shard_levels,
                |l| l.entries() as f64,
                Some(|l| (l.entries() * l.entry_bytes) as f64),
            );
            levels = Some(shard_levels);
            MetricsHook {
                hits: stats::counter(&m, "cache.hits", &name),
                misses: stats::counter(&m, "cache.misses", &name),
                evictions: stats::counter(&m, "cache.evictions", &name),
            }
        });
        tracing::debug!(capacity, shards = shards.len(), "built in-memory cache");
        Ok(S3FifoCache {
            mask: shards.len() - 1,
            shards,
            hasher: foldhash::fast::RandomState::default(),
            default_ttl: self.ttl,
            capacity,
            hits: Counter::new(),
            misses: Counter::new(),
            metrics,
            levels,
        })
    }
}

fn prev_power_of_two(n: usize) -> usize {
    // n >= 1
    1 << (usize::BITS - 1 - n.leading_zeros())
}

impl<K: Hash + Eq, V: Clone> S3FifoCache<K, V> {
    /// A cache of `capacity` entries with default settings.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] if `capacity` is 0.
    pub fn new(capacity: usize) -> Result<Self> {
        Self::builder().capacity(capacity).build()
    }

    /// A builder; set at least [`capacity`](S3FifoCacheBuilder::capacity).
    pub fn builder() -> S3FifoCacheBuilder<K, V> {
        S3FifoCacheBuilder::default()
    }

    /// `BuildHasher::hash_one` spelled out: the default method was left out of line
    /// (8 % of a get-or-insert profile) where this folds to a few multiplies.
    #[inline(always)]
    #[allow(clippy::manual_hash_one)] // deliberate, see above
    fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        let mut h = self.hasher.build_hasher();
        key.hash(&mut h);
        h.finish()
    }

    /// The shard index of `hash`, from bits 32.. so that neither the table's bucket bits
    /// (low) nor its tag bits (top 7) are constant within a shard.
    #[inline]
    fn index(&self, hash: u64) -> usize {
        (hash >> 32) as usize & self.mask
    }

    #[inline]
    fn lock(&self, hash: u64) -> &RwLock<Shard<K, V>> {
        &self.shards[self.index(hash)].0
    }

    /// The write lock of shard `i`; every change to a shard goes through it, so the
    /// level gauges follow every change.
    #[inline]
    fn write_shard(&self, i: usize) -> ShardWrite<'_, K, V> {
        ShardWrite {
            guard: write(&self.shards[i].0),
            level: self.levels.as_ref().map(|l| &l.entries[i].0),
        }
    }

    #[inline]
    fn shard(&self, hash: u64) -> ShardWrite<'_, K, V> {
        self.write_shard(self.index(hash))
    }

    #[inline]
    fn count(&self, hit: bool) {
        let (ours, mirror) = match (hit, &self.metrics) {
            (true, m) => (&self.hits, m.as_ref().map(|m| &m.hits)),
            (false, m) => (&self.misses, m.as_ref().map(|m| &m.misses)),
        };
        ours.increment();
        if let Some(c) = mirror {
            c.increment();
        }
    }

    /// Look up under the read lock; an expired entry is removed under the write lock.
    #[inline]
    fn lookup<Q>(&self, hash: u64, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let lock = self.lock(hash);
        let shard = read(lock);
        match shard.get(hash, key) {
            Lookup::Hit(v) => Some(v.clone()),
            Lookup::Miss => None,
            Lookup::Expired => {
                drop(shard);
                self.shard(hash).expire(hash, key);
                None
            }
        }
    }

    /// A clone of the live value under `key`.
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        let found = self.lookup(hash, key);
        self.count(found.is_some());
        found
    }

    /// Insert or replace `key` with the default TTL (if any).
    #[inline]
    pub fn insert(&self, key: K, value: V) {
        self.insert_inner(key, value, self.default_ttl);
    }

    /// Insert or replace `key`, expiring after `ttl`.
    pub fn insert_with_ttl(&self, key: K, value: V, ttl: Duration) {
        self.insert_inner(key, value, Some(ttl));
    }

    #[inline]
    fn insert_inner(&self, key: K, value: V, ttl: Option<Duration>) {
        let hash = self.hash(&key);
        let expires = ttl.and_then(|t| Instant::now().checked_add(t));
        let outcome = self.shard(hash).insert(hash, key, value, expires);
        if outcome.evicted
            && let Some(m) = &self.metrics
        {
            m.evictions.increment();
        }
    }

    /// Remove `key`, returning its value if it was live.
    pub fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        self.shard(hash).remove(hash, key)
    }

    /// The value under `key`, or `init()` inserted (with the default TTL) and returned.
    ///
    /// `init` runs outside the shard lock, so it may use the cache; two callers missing
    /// the same key at once may both run it, and the first to insert wins (both get its
    /// value). For one computation per key under concurrency, store an
    /// `Arc<tokio::sync::OnceCell<T>>` as the value and initialise it after the insert.
    pub fn get_or_insert_with(&self, key: K, init: impl FnOnce() -> V) -> V {
        let hash = self.hash(&key);
        let found = self.lookup(hash, &key);
        self.count(found.is_some());
        if let Some(v) = found {
            return v;
        }
        let value = init();
        let expires = self.default_ttl.and_then(|t| Instant::now().checked_add(t));
        let mut shard = self.shard(hash);
        if let Some(v) = shard.peek(hash, &key) {
            return v.clone();
        }
        let outcome = shard.insert(hash, key, value.clone(), expires);
        drop(shard);
        if outcome.evicted
            && let Some(m) = &self.metrics
        {
            m.evictions.increment();
        }
        value
    }

    /// Entries held (may include expired entries not yet touched). Locks each shard in
    /// turn, so it is a moving figure under concurrent writes.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| read(&s.0).len()).sum()
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The maximum number of entries.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Drop every entry; counters keep counting.
    pub fn clear(&self) {
        for i in 0..self.shards.len() {
            self.write_shard(i).clear();
        }
    }

    /// A snapshot of the counters (summed over shards, each read under its lock).
    pub fn stats(&self) -> S3FifoStats {
        let mut stats = S3FifoStats {
            hits: self.hits.total(),
            misses: self.misses.total(),
            capacity: self.capacity as u64,
            ..S3FifoStats::default()
        };
        for s in &self.shards {
            let shard = read(&s.0);
            let c = shard.counts;
            stats.inserts += c.inserts;
            stats.evictions += c.evictions;
            stats.expirations += c.expirations;
            stats.entries += shard.len() as u64;
        }
        stats
    }
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_count_follows_capacity_and_cpus() {
        let c: S3FifoCache<u64, u64> = S3FifoCache::new(10).unwrap();
        assert_eq!(c.shards.len(), 1);
        let c: S3FifoCache<u64, u64> = S3FifoCache::builder()
            .capacity(3)
            .shards(8)
            .build()
            .unwrap();
        assert_eq!(c.shards.len(), 2);
        let total: usize = c.shards.iter().map(|s| read(&s.0).capacity()).sum();
        assert_eq!(total, 3);
        let c: S3FifoCache<u64, u64> = S3FifoCache::builder().capacity(1 << 20).build().unwrap();
        let cpus = std::thread::available_parallelism().unwrap().get();
        assert_eq!(c.shards.len(), (8 * cpus).next_power_of_two());
    }

    #[test]
    fn rejects_zero() {
        assert!(matches!(
            S3FifoCache::<u64, u64>::new(0),
            Err(Error::InvalidConfig {
                key: "capacity",
                ..
            })
        ));
        assert!(
            S3FifoCache::<u64, u64>::builder()
                .capacity(5)
                .shards(0)
                .build()
                .is_err()
        );
    }

    #[test]
    fn shards_stay_consistent() {
        let c: S3FifoCache<u64, u64> = S3FifoCache::builder()
            .capacity(500)
            .shards(4)
            .build()
            .unwrap();
        for k in 0..5_000 {
            c.insert(k % 997, k);
            if k % 5 == 0 {
                c.remove(&(k % 13));
            }
            c.get(&(k % 31));
        }
        for s in &c.shards {
            read(&s.0).check();
        }
    }
}
