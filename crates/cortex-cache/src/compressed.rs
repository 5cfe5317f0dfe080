use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use cortex_metrics::{Counter, Metrics};
use flate2::Compression;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use serde::{Deserialize, Serialize};

use crate::{Cache, CacheStats, CompressionStats, Error, Result};

/// First byte of a value stored as is.
const RAW: u8 = 0;
/// First byte of a value stored zlib-compressed.
const ZLIB: u8 = 1;

/// Settings of a [`Compressed`] cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CompressionConfig {
    /// Values shorter than this are stored raw. Default: 1024 bytes.
    pub threshold: usize,
    /// zlib level, 0 (none) to 9 (smallest). Default: 6.
    pub level: u32,
    /// Largest value a read will inflate to; a bigger one is an error, so a corrupt or
    /// hostile entry in a shared store cannot exhaust memory. Default: 64 MiB.
    pub max_decompressed: usize,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        Self {
            threshold: 1024,
            level: 6,
            max_decompressed: 64 << 20,
        }
    }
}

/// A [`Cache`] wrapper that zlib-compresses values of at least `threshold` bytes,
/// keeping the compressed form only when it is smaller.
///
/// Stored values carry a one-byte header: `0` raw, `1` zlib. A stored value with any
/// other first byte is returned as is: counters written by [`Cache::increment`] (decimal
/// ASCII) pass through this way, as do values written without the wrapper (unless they
/// start with byte 0 or 1).
///
/// ```
/// use cortex_cache::{Cache, Compressed, CompressionConfig, MemoryConfig, MemoryStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let cache = Compressed::new(MemoryStore::new(MemoryConfig::default())?, CompressionConfig::default());
/// let page = "<p>hello</p>".repeat(1000);
/// cache.set("page", page.as_bytes(), None).await?;
/// assert_eq!(cache.get("page").await?.as_deref(), Some(page.as_bytes()));
/// assert!(cache.stats().compression.is_some_and(|c| c.bytes_saved > 10_000));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Compressed<C> {
    inner: C,
    config: CompressionConfig,
    stats: Recorder,
}

#[derive(Debug, Default)]
struct Recorder {
    compressed: AtomicU64,
    uncompressed: AtomicU64,
    bytes_in: AtomicU64,
    bytes_stored: AtomicU64,
    series: Option<Series>,
}

#[derive(Debug)]
struct Series {
    compressed: Arc<Counter>,
    uncompressed: Arc<Counter>,
    bytes_saved: Arc<Counter>,
}

impl<C: Cache> Compressed<C> {
    /// Wrap `inner`.
    pub fn new(inner: C, config: CompressionConfig) -> Self {
        Self {
            inner,
            config,
            stats: Recorder::default(),
        }
    }

    /// As [`new`](Self::new), also counting into `registry` under the label
    /// `cache="<name>"`: the counters `cache.compressed` (values stored compressed),
    /// `cache.uncompressed` (stored raw) and `cache.bytes_saved`, exported as
    /// `cortex_cache_compressed_total{cache="<name>"}` and so on. Hits, misses and the
    /// level gauges are the wrapped cache's to record: build it `with_metrics` too, under
    /// the same name if you like, since the families differ.
    ///
    /// ```
    /// use cortex_cache::{Cache, Compressed, CompressionConfig, MemoryConfig, MemoryStore};
    /// use cortex_metrics::Metrics;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let registry = Metrics::new();
    /// let store = MemoryStore::with_metrics(MemoryConfig::default(), &registry, "pages")?;
    /// let pages = Compressed::with_metrics(store, CompressionConfig::default(), &registry, "pages");
    /// pages.set("home", "<p>hello</p>".repeat(1000).as_bytes(), None).await?;
    /// let text = registry.prometheus();
    /// assert!(text.contains("cortex_cache_compressed_total{cache=\"pages\"} 1\n"));
    /// assert!(text.contains("cortex_cache_sets_total{cache=\"pages\"} 1\n"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_metrics(
        inner: C,
        config: CompressionConfig,
        registry: &Metrics,
        name: &str,
    ) -> Self {
        let c = |what: &str| crate::stats::counter(registry, what, name);
        Self {
            inner,
            config,
            stats: Recorder {
                series: Some(Series {
                    compressed: c("cache.compressed"),
                    uncompressed: c("cache.uncompressed"),
                    bytes_saved: c("cache.bytes_saved"),
                }),
                ..Recorder::default()
            },
        }
    }

    /// The wrapped cache.
    pub fn inner(&self) -> &C {
        &self.inner
    }

    /// The wrapped cache.
    pub fn into_inner(self) -> C {
        self.inner
    }

    /// What compression did so far.
    pub fn compression_stats(&self) -> CompressionStats {
        let s = &self.stats;
        let bytes_in = s.bytes_in.load(Relaxed);
        let bytes_stored = s.bytes_stored.load(Relaxed);
        let compressed = s.compressed.load(Relaxed);
        let uncompressed = s.uncompressed.load(Relaxed);
        CompressionStats {
            items: compressed + uncompressed,
            compressed,
            uncompressed,
            bytes_in,
            bytes_stored,
            bytes_saved: bytes_in.saturating_sub(bytes_stored),
            ratio: if bytes_in == 0 {
                1.0
            } else {
                bytes_stored as f64 / bytes_in as f64
            },
        }
    }

    fn encode(&self, value: &[u8]) -> Result<Vec<u8>> {
        let mut stored = None;
        if value.len() >= self.config.threshold {
            let mut out = Vec::with_capacity(value.len() / 2 + 16);
            out.push(ZLIB);
            let mut enc = ZlibEncoder::new(out, Compression::new(self.config.level.min(9)));
            enc.write_all(value).map_err(Error::Compression)?;
            let out = enc.finish().map_err(Error::Compression)?;
            if out.len() < value.len() + 1 {
                stored = Some(out);
            }
        }
        let s = &self.stats;
        let stored = match stored {
            Some(z) => {
                s.compressed.fetch_add(1, Relaxed);
                z
            }
            None => {
                s.uncompressed.fetch_add(1, Relaxed);
                let mut raw = Vec::with_capacity(value.len() + 1);
                raw.push(RAW);
                raw.extend_from_slice(value);
                raw
            }
        };
        s.bytes_in.fetch_add(value.len() as u64, Relaxed);
        s.bytes_stored.fetch_add(stored.len() as u64, Relaxed);
        if let Some(m) = &s.series {
            if stored.first() == Some(&ZLIB) {
                m.compressed.increment();
                m.bytes_saved
                    .add((value.len() as u64).saturating_sub(stored.len() as u64));
            } else {
                m.uncompressed.increment();
            }
        }
        Ok(stored)
    }

    fn decode(&self, stored: Vec<u8>) -> Result<Vec<u8>> {
        match stored.first() {
            Some(&RAW) => Ok(stored[1..].to_vec()),
            Some(&ZLIB) => {
                let limit = self.config.max_decompressed;
                let mut out = Vec::with_capacity(stored.len() * 3);
                ZlibDecoder::new(&stored[1..])
                    .take(limit as u64 + 1)
                    .read_to_end(&mut out)
                    .map_err(Error::Compression)?;
                if out.len() > limit {
                    return Err(Error::Compression(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("value inflates beyond max_decompressed ({limit} bytes)"),
                    )));
                }
                Ok(out)
            }
            _ => Ok(stored),
        }
    }

    fn decode_opt(&self, stored: Option<Vec<u8>>) -> Result<Option<Vec<u8>>> {
        stored.map(|v| self.decode(v)).transpose()
    }
}

impl<C: Cache> Cache for Compressed<C> {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let stored = self.inner.get(key).await?;
        self.decode_opt(stored)
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        let stored = self.encode(value)?;
        self.inner.set(key, &stored, ttl).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.inner.delete(key).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.inner.exists(key).await
    }

    async fn clear(&self) -> Result<u64> {
        self.inner.clear().await
    }

    async fn increment(&self, key: &str, by: i64) -> Result<i64> {
        self.inner.increment(key, by).await
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let stored = self.inner.get_many(keys).await?;
        stored.into_iter().map(|v| self.decode_opt(v)).collect()
    }

    async fn set_many(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        let encoded = items
            .iter()
            .map(|(k, v)| Ok((*k, self.encode(v)?)))
            .collect::<Result<Vec<_>>>()?;
        let borrowed: Vec<(&str, &[u8])> =
            encoded.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        self.inner.set_many(&borrowed, ttl).await
    }

    fn stats(&self) -> CacheStats {
        CacheStats {
            compression: Some(self.compression_stats()),
            ..self.inner.stats()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemoryConfig, MemoryStore};

    fn cache() -> Compressed<MemoryStore> {
        let store = MemoryStore::new(MemoryConfig::default()).unwrap();
        Compressed::new(store, CompressionConfig::default())
    }

    #[tokio::test]
    async fn incompressible_and_small_values_stay_raw() {
        let c = cache();
        // A xorshift stream: random enough that zlib cannot shrink it.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        c.set("noise", &noise, None).await.unwrap();
        c.set("small", b"hi", None).await.unwrap();
        assert_eq!(c.inner().get("noise").await.unwrap().unwrap()[0], RAW);
        assert_eq!(c.get("noise").await.unwrap().unwrap(), noise);
        let s = c.compression_stats();
        assert_eq!((s.items, s.compressed, s.uncompressed), (2, 0, 2));
    }

    #[tokio::test]
    async fn counters_and_bombs() {
        let c = cache();
        c.increment("n", 3).await.unwrap();
        assert_eq!(c.get("n").await.unwrap().unwrap(), b"3");
        let small = Compressed::new(
            MemoryStore::new(MemoryConfig::default()).unwrap(),
            CompressionConfig {
                max_decompressed: 100,
                ..CompressionConfig::default()
            },
        );
        small.set("big", &[b'a'; 10_000], None).await.unwrap();
        assert!(matches!(small.get("big").await, Err(Error::Compression(_))));
    }
}
