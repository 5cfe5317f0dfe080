use std::sync::{Arc, Weak};

use cortex_metrics::{Counter, Metrics};
use serde::{Deserialize, Serialize};

/// A snapshot of what one cache has done since it was made.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheStats {
    /// Reads that found a value.
    pub hits: u64,
    /// Reads that found nothing (including reads degraded to a miss by an error).
    pub misses: u64,
    /// Values written.
    pub sets: u64,
    /// Keys deleted (calls to `delete` that removed something, plus keys `clear` removed).
    pub deletes: u64,
    /// Backend errors, whether returned or degraded.
    pub errors: u64,
    /// Live entries dropped to make room under a bound (a [`MemoryStore`]'s entry or
    /// byte bound); always 0 for a store that does not evict by itself, such as Redis.
    ///
    /// [`MemoryStore`]: crate::MemoryStore
    #[serde(default)]
    pub evictions: u64,
    /// What compression did, for a [`Compressed`](crate::Compressed) cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<CompressionStats>,
}

impl CacheStats {
    /// `hits / (hits + misses)`, 0 before any read.
    pub fn hit_ratio(&self) -> f64 {
        let reads = self.hits + self.misses;
        if reads == 0 {
            0.0
        } else {
            self.hits as f64 / reads as f64
        }
    }
}

/// What a [`Compressed`](crate::Compressed) cache did to the values it wrote.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompressionStats {
    /// Values written.
    pub items: u64,
    /// Values stored compressed.
    pub compressed: u64,
    /// Values stored raw (under the threshold, or not smaller compressed).
    pub uncompressed: u64,
    /// Bytes handed to `set`.
    pub bytes_in: u64,
    /// Bytes stored, headers included.
    pub bytes_stored: u64,
    /// `bytes_in - bytes_stored`, never below zero.
    pub bytes_saved: u64,
    /// `bytes_stored / bytes_in` (1.0 before any write): lower is better.
    pub ratio: f64,
}

/// The label key of every cache series: `cache="<name>"`.
pub(crate) const LABEL: &str = "cache";

/// The counter `what` of the cache `name` in `registry`: the series `{cache="<name>"}`
/// of the family `what`.
pub(crate) fn counter(registry: &Metrics, what: &str, name: &str) -> Arc<Counter> {
    // `cache` is a valid label name, so this cannot fail; the unlabeled series of the
    // same family is the fallback that keeps counting if a registry ever refused it.
    registry
        .counter_with(what, &[(LABEL, name)])
        .unwrap_or_else(|_| registry.counter(what))
}

/// Register the level gauges `cache.entries` and (when `bytes` reads something)
/// `cache.size_bytes` of the cache `name`, read from `levels` at scrape time. The
/// registry keeps only a [`Weak`], so the gauges read `NaN` once the cache (the owner of
/// `levels`) is dropped; a new cache of the same name takes the series over.
pub(crate) fn register_levels<T: Send + Sync + 'static>(
    registry: &Metrics,
    name: &str,
    levels: &Arc<T>,
    entries: fn(&T) -> f64,
    bytes: Option<fn(&T) -> f64>,
) {
    let gauges = [
        ("cache.entries", Some(entries)),
        ("cache.size_bytes", bytes),
    ];
    for (what, read) in gauges {
        let Some(read) = read else { continue };
        let weak: Weak<T> = Arc::downgrade(levels);
        let gauge = move || weak.upgrade().map_or(f64::NAN, |l| read(&l));
        // As for the counters: cannot fail for `cache`, the unlabeled series is the
        // fallback.
        if registry
            .gauge_fn(what, &[(LABEL, name)], gauge.clone())
            .is_err()
        {
            let _ = registry.gauge_fn(what, &[], gauge);
        }
    }
}

/// Counters of one cache: per-thread sharded (two cores counting hits do not fight over
/// a cache line), and the very counters of a cortex-metrics registry when one is given,
/// so each event is counted once.
#[derive(Debug)]
pub(crate) struct Recorder {
    hits: Arc<Counter>,
    misses: Arc<Counter>,
    sets: Arc<Counter>,
    deletes: Arc<Counter>,
    errors: Arc<Counter>,
    evictions: Arc<Counter>,
}

impl Default for Recorder {
    fn default() -> Self {
        let c = || Arc::new(Counter::new());
        Self {
            hits: c(),
            misses: c(),
            sets: c(),
            deletes: c(),
            errors: c(),
            evictions: c(),
        }
    }
}

impl Recorder {
    /// Record into `registry` as the series `{cache="<name>"}` of the families
    /// `cache.hits`, `cache.misses`, `cache.sets`, `cache.deletes`, `cache.errors` and,
    /// when `evicts`, `cache.evictions` (a store that never evicts exports no eviction
    /// series that would read 0 forever).
    pub(crate) fn with_metrics(registry: &Metrics, name: &str, evicts: bool) -> Self {
        let c = |what: &str| counter(registry, what, name);
        Self {
            hits: c("cache.hits"),
            misses: c("cache.misses"),
            sets: c("cache.sets"),
            deletes: c("cache.deletes"),
            errors: c("cache.errors"),
            evictions: if evicts {
                c("cache.evictions")
            } else {
                Arc::new(Counter::new())
            },
        }
    }

    pub(crate) fn hits(&self, n: u64) {
        self.hits.add(n);
    }

    pub(crate) fn misses(&self, n: u64) {
        self.misses.add(n);
    }

    /// One read: a hit when `found`.
    pub(crate) fn read(&self, found: bool) {
        if found { self.hits(1) } else { self.misses(1) }
    }

    pub(crate) fn sets(&self, n: u64) {
        self.sets.add(n);
    }

    pub(crate) fn deletes(&self, n: u64) {
        self.deletes.add(n);
    }

    pub(crate) fn evictions(&self, n: u64) {
        if n > 0 {
            self.evictions.add(n);
        }
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn error(&self) {
        self.errors.increment();
    }

    pub(crate) fn snapshot(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.total(),
            misses: self.misses.total(),
            sets: self.sets.total(),
            deletes: self.deletes.total(),
            errors: self.errors.total(),
            evictions: self.evictions.total(),
            compression: None,
        }
    }
}
