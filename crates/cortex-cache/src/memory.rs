use std::num::NonZeroUsize;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cortex_metrics::Metrics;
use cortex_support::{EnvSource, EnvVar, FromEnv};
use lru::LruCache;
use serde::{Deserialize, Serialize};

use crate::stats::{self, Recorder};
use crate::{Cache, CacheStats, Error, Result};

/// Settings of a [`MemoryStore`].
///
/// Read from the environment with [`MemoryConfig::from_env`]; the variables are listed
/// in [`FromEnv::VARS`] (and, from it, in the crate README).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryConfig {
    /// Most entries; the least recently used one is evicted past it. 1 to 2^24
    /// (16 777 216): the table is allocated for it when the store is built. Default: 10 000.
    pub capacity: usize,
    /// Expiry of a `set` given no TTL; `None` keeps such entries until evicted.
    /// Default: none.
    #[serde(with = "cortex_support::duration::opt_secs")]
    pub default_ttl: Option<Duration>,
    /// Most bytes held, each entry weighed as its key and value bytes plus
    /// [`MemoryStore::ENTRY_OVERHEAD`]; least recently used entries are evicted past it,
    /// and a value heavier than the whole bound is not cached. At least 1024.
    /// Default: 64 MiB.
    pub max_bytes: usize,
}

/// Default of [`MemoryConfig::max_bytes`]: 64 MiB.
const DEFAULT_MAX_BYTES: usize = 64 << 20;

/// Least [`MemoryConfig::max_bytes`]: room for a few small entries.
const MIN_MAX_BYTES: usize = 1024;

/// Most [`MemoryConfig::capacity`]: 2^24 entries. The store's table is allocated for
/// the whole capacity when it is built (about 36 bytes an entry), so a larger count
/// asked for gigabytes up front: `1000000000` aborted the process out of memory and
/// `18446744073709551615` panicked ("capacity overflow").
const MAX_CAPACITY: usize = 1 << 24;

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            default_ttl: None,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

impl FromEnv for MemoryConfig {
    type Error = Error;

    const VARS: &'static [EnvVar] = &[
        EnvVar {
            name: "CACHE_MEMORY_CAPACITY",
            default: "10000",
            doc: "Most entries of a `MemoryStore`; the least recently used goes past it.",
        },
        EnvVar {
            name: "CACHE_MEMORY_DEFAULT_TTL",
            default: "unset",
            doc: "Expiry of a `set` given no TTL (unset = kept until evicted).",
        },
        EnvVar {
            name: "CACHE_MEMORY_MAX_BYTES",
            default: "67108864",
            doc: "Most bytes held (an entry weighs key + value + 160 B), at least 1024.",
        },
    ];

    fn from_env_source(env: &EnvSource<'_>) -> Result<Self> {
        let mut c = Self::default();
        if let Some(v) = env.parse("CACHE_MEMORY_CAPACITY")? {
            c.capacity = v;
        }
        if let Some(v) = env.duration("CACHE_MEMORY_DEFAULT_TTL")? {
            c.default_ttl = Some(v);
        }
        if let Some(v) = env.parse("CACHE_MEMORY_MAX_BYTES")? {
            c.max_bytes = v;
        }
        c.validate()?;
        Ok(c)
    }
}

impl MemoryConfig {
    /// Defaults overridden by the environment variables of [`FromEnv::VARS`].
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the variable of a bad value.
    pub fn from_env() -> Result<Self> {
        <Self as FromEnv>::from_env()
    }

    /// Check every value.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the variable of the first bad value.
    pub fn validate(&self) -> Result<()> {
        if self.capacity == 0 {
            return Err(Error::InvalidConfig {
                key: "CACHE_MEMORY_CAPACITY",
                value: "0".to_owned(),
                reason: "must be at least 1".to_owned(),
            });
        }
        if self.capacity > MAX_CAPACITY {
            return Err(Error::InvalidConfig {
                key: "CACHE_MEMORY_CAPACITY",
                value: self.capacity.to_string(),
                reason: format!(
                    "must be at most {MAX_CAPACITY} (the table is allocated for it up front)"
                ),
            });
        }
        if self.default_ttl.is_some_and(|d| d.is_zero()) {
            return Err(Error::InvalidConfig {
                key: "CACHE_MEMORY_DEFAULT_TTL",
                value: "0".to_owned(),
                reason: "must be more than zero (unset it for no expiry)".to_owned(),
            });
        }
        if self.max_bytes < MIN_MAX_BYTES {
            return Err(Error::InvalidConfig {
                key: "CACHE_MEMORY_MAX_BYTES",
                value: self.max_bytes.to_string(),
                reason: format!(
                    "must be at least {MIN_MAX_BYTES} (one entry alone weighs {} bytes plus its key and value)",
                    MemoryStore::ENTRY_OVERHEAD
                ),
            });
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

/// The map and the weight of what it holds, under one lock.
#[derive(Debug)]
struct Entries {
    map: LruCache<String, Entry>,
    /// Sum of [`weight`] over `map`.
    bytes: usize,
}

/// What one entry counts against [`MemoryConfig::max_bytes`].
fn weight(key: &str, value: &[u8]) -> usize {
    key.len() + value.len() + MemoryStore::ENTRY_OVERHEAD
}

impl Entries {
    /// Remove `key`, keeping the weight right.
    fn pop(&mut self, key: &str) -> Option<Entry> {
        let e = self.map.pop(key)?;
        self.bytes -= weight(key, &e.value);
        Some(e)
    }

    /// Insert or replace `key` (already weighed at `w <= max_bytes`), then evict least
    /// recently used entries until both bounds hold. The new entry is the most recently
    /// used, so it is never the one evicted. Returns how many live entries were evicted
    /// (expired ones dropped on the way are not evictions).
    fn put(&mut self, key: String, entry: Entry, w: usize, max_bytes: usize, now: Instant) -> u64 {
        let mut evicted = 0;
        // `push` hands back the replaced entry, or the one the count bound evicted: a
        // key other than the new (most recently used) one.
        if let Some((k, old)) = self.map.push(key, entry) {
            self.bytes -= weight(&k, &old.value);
            if old.live(now) && self.map.peek_mru().is_some_and(|(new, _)| *new != k) {
                evicted += 1;
            }
        }
        self.bytes += w;
        while self.bytes > max_bytes {
            let Some((k, old)) = self.map.pop_lru() else {
                break;
            };
            self.bytes -= weight(&k, &old.value);
            evicted += u64::from(old.live(now));
        }
        evicted
    }
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|at| now < at)
    }
}

/// What the level gauges of a [`MemoryStore`] read: the entry count and weight, stored
/// whenever the lock is released, so a scrape reads two atomics and never waits for the
/// store's lock.
#[derive(Debug, Default)]
struct Levels {
    entries: AtomicUsize,
    bytes: AtomicUsize,
}

/// The store's lock held; on release, the levels are brought up to date (still under
/// the lock, so two releases cannot store out of order).
struct Locked<'a> {
    guard: MutexGuard<'a, Entries>,
    levels: Option<&'a Levels>,
}

impl Deref for Locked<'_> {
    type Target = Entries;

    fn deref(&self) -> &Entries {
        &self.guard
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Entries {
        &mut self.guard
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if let Some(l) = self.levels {
            l.entries.store(self.guard.map.len(), Relaxed);
            l.bytes.store(self.guard.bytes, Relaxed);
        }
    }
}

/// An in-process [`Cache`]: an LRU of byte values with per-entry expiry, bounded both in
/// entries ([`MemoryConfig::capacity`]) and in bytes ([`MemoryConfig::max_bytes`]).
///
/// # Byte bound
///
/// One entry weighs its key and value bytes plus [`ENTRY_OVERHEAD`](Self::ENTRY_OVERHEAD)
/// (160 bytes): a 20-byte key with a 1 KiB value costs 1204 bytes of the bound. A `set`
/// that takes the total past `max_bytes` evicts least recently used entries until it
/// fits. A value too heavy for the whole bound on its own is **not cached**: the `set`
/// succeeds, drops whatever value the key held before (so no stale value is read back),
/// and stores nothing, as if the entry had been evicted at once. That holds for
/// [`increment`](Cache::increment) too, which then counts from zero each time. Reads
/// never take part: a hit costs what it did before the byte bound.
///
/// It has no namespace: [`clear`](Cache::clear) empties it. Expired entries are dropped
/// when met, and otherwise age out through the LRU order. A TTL too large for the clock
/// (e.g. `Duration::MAX`) means no expiry. The lock is a plain mutex held for one map
/// operation and never across an `.await`.
#[derive(Debug)]
pub struct MemoryStore {
    entries: Mutex<Entries>,
    default_ttl: Option<Duration>,
    max_bytes: usize,
    stats: Recorder,
    /// Kept for the level gauges only when the store was built with a registry.
    levels: Option<Arc<Levels>>,
}

impl MemoryStore {
    /// An empty store.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad config.
    pub fn new(config: MemoryConfig) -> Result<Self> {
        Self::build(config, Recorder::default(), None)
    }

    /// As [`new`](Self::new), also recording into `registry` under the label
    /// `cache="<name>"`: the counters `cache.hits`, `cache.misses`, `cache.sets`,
    /// `cache.deletes`, `cache.errors` and `cache.evictions`, and the gauges
    /// `cache.entries` ([`len`](Self::len)) and `cache.size_bytes`
    /// ([`bytes`](Self::bytes)), read when scraped and `NaN` once the store is dropped.
    /// They are exported as `cortex_cache_hits_total{cache="<name>"}`,
    /// `cortex_cache_entries{cache="<name>"}` and so on.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    ///
    /// ```
    /// use cortex_cache::{Cache, MemoryConfig, MemoryStore};
    /// use cortex_metrics::Metrics;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let registry = Metrics::new();
    /// let users = MemoryStore::with_metrics(MemoryConfig::default(), &registry, "users")?;
    /// users.set("ada", b"lovelace", None).await?;
    /// users.get("ada").await?;
    /// let text = registry.prometheus();
    /// assert!(text.contains("cortex_cache_hits_total{cache=\"users\"} 1\n"));
    /// assert!(text.contains("cortex_cache_entries{cache=\"users\"} 1\n"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_metrics(config: MemoryConfig, registry: &Metrics, name: &str) -> Result<Self> {
        let levels = Arc::new(Levels::default());
        let store = Self::build(
            config,
            Recorder::with_metrics(registry, name, true),
            Some(levels.clone()),
        )?;
        stats::register_levels(
            registry,
            name,
            &levels,
            |l| l.entries.load(Relaxed) as f64,
            Some(|l| l.bytes.load(Relaxed) as f64),
        );
        Ok(store)
    }

    fn build(config: MemoryConfig, stats: Recorder, levels: Option<Arc<Levels>>) -> Result<Self> {
        config.validate()?;
        let capacity = NonZeroUsize::new(config.capacity).unwrap_or(NonZeroUsize::MIN);
        Ok(Self {
            entries: Mutex::new(Entries {
                map: LruCache::new(capacity),
                bytes: 0,
            }),
            default_ttl: config.default_ttl,
            max_bytes: config.max_bytes,
            stats,
            levels,
        })
    }

    /// What one entry weighs against [`MemoryConfig::max_bytes`] besides its key and
    /// value bytes: 160.
    ///
    /// Measured on x86-64 Linux with glibc, an entry with a 16-byte key costs 146 to 165
    /// bytes more than its key and value: the LRU list node (key and value headers, two
    /// links: 80 bytes), its hash-table slot, and the allocator's rounding of the node,
    /// key and value allocations. The table is sized for `capacity` when the store is
    /// built (about 280 KB at the default 10 000 entries).
    pub const ENTRY_OVERHEAD: usize = 160;

    /// Live entries plus expired ones not yet dropped.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Weight of the entries held (expired ones not yet dropped included): never more
    /// than [`max_bytes`](Self::max_bytes).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The byte bound, [`MemoryConfig::max_bytes`].
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// `true` when the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> Locked<'_> {
        // A panic while holding the lock cannot leave an entry half-written: every
        // critical section is one LruCache call plus integer bookkeeping.
        Locked {
            guard: self.entries.lock().unwrap_or_else(PoisonError::into_inner),
            levels: self.levels.as_deref(),
        }
    }

    /// When an entry written now with `ttl` expires; `None` (never) for no TTL, and for a
    /// TTL past what the clock can represent.
    fn expiry(&self, ttl: Option<Duration>, now: Instant) -> Option<Instant> {
        ttl.or(self.default_ttl).and_then(|d| now.checked_add(d))
    }

    /// Store `entry` under `key`, or, when it is too heavy for the bound, drop what the
    /// key held.
    fn put(&self, key: &str, entry: Entry, now: Instant) {
        let w = weight(key, &entry.value);
        if w > self.max_bytes {
            self.lock().pop(key);
            tracing::debug!(
                key,
                bytes = w,
                max_bytes = self.max_bytes,
                "value too large to cache in memory"
            );
            return;
        }
        let key = key.to_owned();
        let evicted = self.lock().put(key, entry, w, self.max_bytes, now);
        self.stats.evictions(evicted);
    }

    fn get_now(&self, key: &str, now: Instant) -> Option<Vec<u8>> {
        let mut entries = self.lock();
        let found = match entries.map.get(key) {
            Some(e) if e.live(now) => Some(e.value.clone()),
            Some(_) => {
                entries.pop(key);
                None
            }
            None => None,
        };
        drop(entries);
        self.stats.read(found.is_some());
        found
    }
}

impl Cache for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        // Spans here and in the other stores cost one level check when debug is off.
        let span = tracing::debug_span!("cache.get", cache = "memory", hit = tracing::field::Empty);
        let _entered = span.enter();
        let found = self.get_now(key, Instant::now());
        span.record("hit", found.is_some());
        Ok(found)
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        let _entered = tracing::debug_span!("cache.set", cache = "memory").entered();
        let now = Instant::now();
        let entry = Entry {
            value: value.to_vec(),
            expires: self.expiry(ttl, now),
        };
        self.put(key, entry, now);
        self.stats.sets(1);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let _entered = tracing::debug_span!("cache.delete", cache = "memory").entered();
        let now = Instant::now();
        let removed = self.lock().pop(key).is_some_and(|e| e.live(now));
        if removed {
            self.stats.deletes(1);
        }
        Ok(removed)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let now = Instant::now();
        Ok(self.lock().map.peek(key).is_some_and(|e| e.live(now)))
    }

    async fn clear(&self) -> Result<u64> {
        let now = Instant::now();
        let mut entries = self.lock();
        let live = entries.map.iter().filter(|(_, e)| e.live(now)).count() as u64;
        entries.map.clear();
        entries.bytes = 0;
        drop(entries);
        self.stats.deletes(live);
        Ok(live)
    }

    async fn increment(&self, key: &str, by: i64) -> Result<i64> {
        let now = Instant::now();
        let not_int = || Error::NotAnInteger {
            key: key.to_owned(),
        };
        let mut entries = self.lock();
        // Like INCRBY: an existing counter keeps its expiry, a new one gets the default.
        let (current, expires) = match entries.map.get(key) {
            Some(e) if e.live(now) => {
                let n = std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or_else(not_int)?;
                (n, e.expires)
            }
            _ => (0, self.expiry(None, now)),
        };
        let next = current.checked_add(by).ok_or_else(not_int)?;
        let value = next.to_string().into_bytes();
        let w = weight(key, &value);
        if w > self.max_bytes {
            // Not cached, as any value too heavy for the bound.
            entries.pop(key);
            drop(entries);
        } else {
            let evicted = entries.put(
                key.to_owned(),
                Entry { value, expires },
                w,
                self.max_bytes,
                now,
            );
            drop(entries);
            self.stats.evictions(evicted);
        }
        Ok(next)
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let now = Instant::now();
        Ok(keys.iter().map(|k| self.get_now(k, now)).collect())
    }

    fn stats(&self) -> CacheStats {
        self.stats.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn increment_matches_redis_semantics() {
        let m = MemoryStore::new(MemoryConfig::default()).unwrap();
        assert_eq!(m.increment("n", 5).await.unwrap(), 5);
        assert_eq!(m.increment("n", -7).await.unwrap(), -2);
        assert_eq!(m.get("n").await.unwrap().unwrap(), b"-2");
        m.set("s", b"text", None).await.unwrap();
        assert!(matches!(
            m.increment("s", 1).await,
            Err(Error::NotAnInteger { .. })
        ));
        m.set("big", i64::MAX.to_string().as_bytes(), None)
            .await
            .unwrap();
        assert!(m.increment("big", 1).await.is_err());
    }

    /// The weight kept up to date equals the weight of what the map holds, through
    /// replacements, evictions by count and by bytes, expiry, deletes and counters.
    #[tokio::test]
    async fn tracked_bytes_match_the_entries() {
        let m = MemoryStore::new(MemoryConfig {
            capacity: 40,
            max_bytes: 8 * 1024,
            ..MemoryConfig::default()
        })
        .unwrap();
        let recount = |m: &MemoryStore| {
            let e = m.lock();
            let sum: usize = e.map.iter().map(|(k, v)| weight(k, &v.value)).sum();
            (e.bytes, sum)
        };
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        for i in 0..5_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = format!("k{}", x % 97);
            match i % 7 {
                0 => {
                    m.delete(&key).await.unwrap();
                }
                // Fails on a key holding a non-counter value: that is fine here.
                1 => {
                    let _ = m.increment(&key, 1).await;
                }
                2 => m
                    .set(&key, b"x", Some(Duration::from_nanos(1)))
                    .await
                    .unwrap(),
                3 => {
                    m.get(&key).await.unwrap();
                }
                _ => {
                    let len = (x >> 40) as usize % 3_000;
                    m.set(&key, &vec![0; len], None).await.unwrap();
                }
            }
            let (tracked, sum) = recount(&m);
            assert_eq!(tracked, sum, "after op {i}");
            assert!(tracked <= 8 * 1024 && m.len() <= 40);
        }
        m.clear().await.unwrap();
        assert_eq!(recount(&m), (0, 0));
    }

    #[test]
    fn zero_capacity_names_the_variable() {
        let err = MemoryStore::new(MemoryConfig {
            capacity: 0,
            ..MemoryConfig::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("CACHE_MEMORY_CAPACITY"), "{err}");
    }

    /// A capacity the table cannot be allocated for is refused by name, before any
    /// allocation (it aborted or panicked in the build).
    #[test]
    fn a_capacity_too_large_to_allocate_names_the_variable() {
        for capacity in [MAX_CAPACITY + 1, 1_000_000_000, usize::MAX] {
            let err = MemoryStore::new(MemoryConfig {
                capacity,
                ..MemoryConfig::default()
            })
            .unwrap_err();
            let text = err.to_string();
            assert!(text.contains("CACHE_MEMORY_CAPACITY"), "{text}");
            assert!(text.contains(&capacity.to_string()), "{text}");
        }
        assert!(
            MemoryStore::new(MemoryConfig {
                capacity: 1 << 16,
                ..MemoryConfig::default()
            })
            .is_ok()
        );
    }
}
