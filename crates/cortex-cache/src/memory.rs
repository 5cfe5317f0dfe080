use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cortex_metrics::Metrics;
use cortex_metrics::env::EnvSource;
use lru::LruCache;
use serde::{Deserialize, Serialize};

use crate::stats::Recorder;
use crate::{Cache, CacheStats, Error, Result};

/// Settings of a [`MemoryStore`].
///
/// | field | variable | default |
/// |---|---|---|
/// | `capacity` | `CACHE_MEMORY_CAPACITY` | 10 000 |
/// | `default_ttl` | `CACHE_MEMORY_DEFAULT_TTL`, s | none |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryConfig {
    /// Most entries; the least recently used one is evicted past it. Default: 10 000.
    pub capacity: usize,
    /// Expiry of a `set` given no TTL; `None` keeps such entries until evicted.
    /// Default: none.
    #[serde(with = "cortex_metrics::env::opt_secs")]
    pub default_ttl: Option<Duration>,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            default_ttl: None,
        }
    }
}

impl MemoryConfig {
    /// Defaults overridden by the environment (see the table above).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the variable of a bad value.
    pub fn from_env() -> Result<Self> {
        Self::from_source(&EnvSource::process())
    }

    /// As [`from_env`](Self::from_env), from any [`EnvSource`].
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn from_source(env: &EnvSource<'_>) -> Result<Self> {
        let mut c = Self::default();
        if let Some(v) = env.parse("CACHE_MEMORY_CAPACITY")? {
            c.capacity = v;
        }
        if let Some(v) = env.secs("CACHE_MEMORY_DEFAULT_TTL")? {
            c.default_ttl = Some(v);
        }
        c.validate()?;
        Ok(c)
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
        if self.default_ttl.is_some_and(|d| d.is_zero()) {
            return Err(Error::InvalidConfig {
                key: "CACHE_MEMORY_DEFAULT_TTL",
                value: "0".to_owned(),
                reason: "must be more than zero (unset it for no expiry)".to_owned(),
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

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|at| now < at)
    }
}

/// An in-process [`Cache`]: an LRU of byte values with per-entry expiry.
///
/// It has no namespace: [`clear`](Cache::clear) empties it. Expired entries are dropped
/// when met, and otherwise age out through the LRU order. The lock is a plain mutex held
/// for one map operation and never across an `.await`.
#[derive(Debug)]
pub struct MemoryStore {
    entries: Mutex<LruCache<String, Entry>>,
    default_ttl: Option<Duration>,
    stats: Recorder,
}

impl MemoryStore {
    /// An empty store.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad config.
    pub fn new(config: MemoryConfig) -> Result<Self> {
        Self::build(config, Recorder::default())
    }

    /// As [`new`](Self::new), also counting into `registry` as `cache.<name>.hits` etc.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_metrics(config: MemoryConfig, registry: &Metrics, name: &str) -> Result<Self> {
        Self::build(config, Recorder::with_metrics(registry, name))
    }

    fn build(config: MemoryConfig, stats: Recorder) -> Result<Self> {
        config.validate()?;
        let capacity = NonZeroUsize::new(config.capacity).unwrap_or(NonZeroUsize::MIN);
        Ok(Self {
            entries: Mutex::new(LruCache::new(capacity)),
            default_ttl: config.default_ttl,
            stats,
        })
    }

    /// Live entries plus expired ones not yet dropped.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// `true` when the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, LruCache<String, Entry>> {
        // A panic while holding the lock cannot leave an entry half-written: every
        // critical section is one LruCache call.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn expiry(&self, ttl: Option<Duration>, now: Instant) -> Option<Instant> {
        ttl.or(self.default_ttl).map(|d| now + d)
    }

    fn get_now(&self, key: &str, now: Instant) -> Option<Vec<u8>> {
        let mut map = self.lock();
        let found = match map.get(key) {
            Some(e) if e.live(now) => Some(e.value.clone()),
            Some(_) => {
                map.pop(key);
                None
            }
            None => None,
        };
        drop(map);
        self.stats.read(found.is_some());
        found
    }
}

impl Cache for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.get_now(key, Instant::now()))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        let now = Instant::now();
        let entry = Entry {
            value: value.to_vec(),
            expires: self.expiry(ttl, now),
        };
        self.lock().put(key.to_owned(), entry);
        self.stats.sets(1);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let now = Instant::now();
        let removed = self.lock().pop(key).is_some_and(|e| e.live(now));
        if removed {
            self.stats.deletes(1);
        }
        Ok(removed)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let now = Instant::now();
        Ok(self.lock().peek(key).is_some_and(|e| e.live(now)))
    }

    async fn clear(&self) -> Result<u64> {
        let now = Instant::now();
        let mut map = self.lock();
        let live = map.iter().filter(|(_, e)| e.live(now)).count() as u64;
        map.clear();
        drop(map);
        self.stats.deletes(live);
        Ok(live)
    }

    async fn increment(&self, key: &str, by: i64) -> Result<i64> {
        let now = Instant::now();
        let not_int = || Error::NotAnInteger {
            key: key.to_owned(),
        };
        let mut map = self.lock();
        // Like INCRBY: an existing counter keeps its expiry, a new one gets the default.
        let (current, expires) = match map.get(key) {
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
        map.put(
            key.to_owned(),
            Entry {
                value: next.to_string().into_bytes(),
                expires,
            },
        );
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

    #[test]
    fn zero_capacity_names_the_variable() {
        let err = MemoryStore::new(MemoryConfig {
            capacity: 0,
            ..MemoryConfig::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("CACHE_MEMORY_CAPACITY"), "{err}");
    }
}
