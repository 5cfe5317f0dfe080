use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

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

/// The live counters behind [`CacheStats`], mirrored into a cortex-metrics registry when
/// one is given.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    hits: AtomicU64,
    misses: AtomicU64,
    sets: AtomicU64,
    deletes: AtomicU64,
    errors: AtomicU64,
    series: Option<Series>,
}

#[derive(Debug)]
struct Series {
    hits: Arc<Counter>,
    misses: Arc<Counter>,
    sets: Arc<Counter>,
    deletes: Arc<Counter>,
    errors: Arc<Counter>,
}

impl Recorder {
    /// Also record into `registry` as `cache.<name>.hits`, `.misses`, `.sets`, `.deletes`,
    /// `.errors`.
    pub(crate) fn with_metrics(registry: &Metrics, name: &str) -> Self {
        let c = |what: &str| registry.counter(&format!("cache.{name}.{what}"));
        Self {
            series: Some(Series {
                hits: c("hits"),
                misses: c("misses"),
                sets: c("sets"),
                deletes: c("deletes"),
                errors: c("errors"),
            }),
            ..Self::default()
        }
    }

    pub(crate) fn hits(&self, n: u64) {
        self.hits.fetch_add(n, Relaxed);
        if let Some(s) = &self.series {
            s.hits.add(n);
        }
    }

    pub(crate) fn misses(&self, n: u64) {
        self.misses.fetch_add(n, Relaxed);
        if let Some(s) = &self.series {
            s.misses.add(n);
        }
    }

    /// One read: a hit when `found`.
    pub(crate) fn read(&self, found: bool) {
        if found { self.hits(1) } else { self.misses(1) }
    }

    pub(crate) fn sets(&self, n: u64) {
        self.sets.fetch_add(n, Relaxed);
        if let Some(s) = &self.series {
            s.sets.add(n);
        }
    }

    pub(crate) fn deletes(&self, n: u64) {
        self.deletes.fetch_add(n, Relaxed);
        if let Some(s) = &self.series {
            s.deletes.add(n);
        }
    }

    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Relaxed);
        if let Some(s) = &self.series {
            s.errors.increment();
        }
    }

    pub(crate) fn snapshot(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            sets: self.sets.load(Relaxed),
            deletes: self.deletes.load(Relaxed),
            errors: self.errors.load(Relaxed),
            compression: None,
        }
    }
}
