use std::sync::Arc;

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
        }
    }
}

impl Recorder {
    /// Record into `registry` as `cache.<name>.hits`, `.misses`, `.sets`, `.deletes`,
    /// `.errors`.
    pub(crate) fn with_metrics(registry: &Metrics, name: &str) -> Self {
        let c = |what: &str| registry.counter(&format!("cache.{name}.{what}"));
        Self {
            hits: c("hits"),
            misses: c("misses"),
            sets: c("sets"),
            deletes: c("deletes"),
            errors: c("errors"),
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
            compression: None,
        }
    }
}
