use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use futures_util::StreamExt;

use crate::{Cache, CacheStats, RedisCache, Result};

/// The payload meaning "clear everything" (a key can never be empty).
const CLEAR_ALL: &str = "";

/// A memory tier in front of Redis, coherent across processes: every write, delete or
/// clear is published on a Redis channel of the namespace, and every other
/// `TwoTierCache` on that namespace evicts the key from its memory tier when the
/// message arrives (milliseconds on a healthy Redis).
///
/// - Reads try memory, then Redis (filling memory for at most `local_ttl`, the bound on
///   staleness if an invalidation is ever missed).
/// - When Redis is down, reads keep being served from memory, writes land in memory
///   only, and the listener reconnects with backoff. After it reconnects it clears the
///   memory tier, because invalidations sent while it was away were missed.
///
/// ```no_run
/// use cortex_cache::{MemoryConfig, MemoryStore, RedisCache, RedisCacheConfig, TwoTierCache, Cache};
/// use cortex_pool::{RedisConfig, RedisPool};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = RedisPool::new(RedisConfig::from_env()?).await?;
/// let redis = RedisCache::new(pool, RedisCacheConfig::from_env()?)?;
/// let cache = TwoTierCache::new(MemoryStore::new(MemoryConfig::default())?, redis)?;
/// cache.set("user:1", b"ada", None).await?; // other processes drop their copy
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct TwoTierCache<L: Cache> {
    local: Arc<L>,
    remote: RedisCache,
    channel: String,
    origin: String,
    local_ttl: Duration,
    listener: tokio::task::JoinHandle<()>,
    local_hits: AtomicU64,
}

impl<L: Cache + 'static> TwoTierCache<L> {
    /// Put `local` in front of `remote`, with memory entries kept at most 60 s.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) when the Redis URL of the
    /// pool cannot make a pub/sub client.
    ///
    /// # Panics
    /// Outside a tokio runtime (the invalidation listener is a task).
    pub fn new(local: L, remote: RedisCache) -> Result<Self> {
        Self::with_local_ttl(local, remote, Duration::from_secs(60))
    }

    /// As [`new`](Self::new), keeping memory entries at most `local_ttl`.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    ///
    /// # Panics
    /// As [`new`](Self::new).
    pub fn with_local_ttl(local: L, remote: RedisCache, local_ttl: Duration) -> Result<Self> {
        let url = remote.pool().config().url.clone();
        let client =
            redis::Client::open(url.as_str()).map_err(|e| crate::Error::InvalidConfig {
                key: "REDIS_URL",
                value: cortex_pool::redact_url(&url),
                reason: e.to_string(),
            })?;
        let channel = format!("{}__invalidate", remote.config().namespace);
        let origin = origin_id();
        let local = Arc::new(local);
        let listener = tokio::spawn(listen(
            client,
            channel.clone(),
            origin.clone(),
            Arc::downgrade(&local),
        ));
        Ok(Self {
            local,
            remote,
            channel,
            origin,
            local_ttl,
            listener,
            local_hits: AtomicU64::new(0),
        })
    }

    /// The memory tier.
    pub fn local(&self) -> &L {
        &self.local
    }

    /// The Redis tier.
    pub fn remote(&self) -> &RedisCache {
        &self.remote
    }

    fn local_ttl(&self, ttl: Option<Duration>) -> Option<Duration> {
        Some(ttl.map_or(self.local_ttl, |t| t.min(self.local_ttl)))
    }

    /// Tell the other processes to drop `key` (or everything, for [`CLEAR_ALL`]).
    async fn publish(&self, key: &str) {
        let message = format!("{}|{key}", self.origin);
        let sent = async {
            let mut conn = self.remote.pool().get().await?;
            redis::cmd("PUBLISH")
                .arg(&self.channel)
                .arg(message)
                .query_async::<i64>(&mut *conn)
                .await
                .map_err(crate::Error::from)
        };
        if let Err(e) = sent.await {
            // The other processes will not hear of this write; their memory entries
            // still expire within local_ttl, and they clear all on reconnect.
            tracing::debug!(channel = %self.channel, error = %e, "invalidation not published");
        }
    }
}

impl<L: Cache> Drop for TwoTierCache<L> {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl<L: Cache + 'static> Cache for TwoTierCache<L> {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.local.get(key).await? {
            self.local_hits.fetch_add(1, Relaxed);
            return Ok(Some(v));
        }
        let v = self.remote.get(key).await?;
        if let Some(v) = &v {
            self.local.set(key, v, self.local_ttl(None)).await?;
        }
        Ok(v)
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.remote.set(key, value, ttl).await?;
        self.local.set(key, value, self.local_ttl(ttl)).await?;
        self.publish(key).await;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let remote = self.remote.delete(key).await?;
        let local = self.local.delete(key).await?;
        self.publish(key).await;
        Ok(remote || local)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.local.exists(key).await? || self.remote.exists(key).await?)
    }

    async fn clear(&self) -> Result<u64> {
        let removed = self.remote.clear().await?;
        self.local.clear().await?;
        self.publish(CLEAR_ALL).await;
        Ok(removed)
    }

    async fn increment(&self, key: &str, by: i64) -> Result<i64> {
        let v = self.remote.increment(key, by).await?;
        self.local.delete(key).await?;
        self.publish(key).await;
        Ok(v)
    }

    /// The Redis tier's stats, with the reads answered from memory counted as hits.
    fn stats(&self) -> CacheStats {
        let mut s = self.remote.stats();
        s.hits += self.local_hits.load(Relaxed);
        s
    }
}

/// A process-unique id, so a cache ignores its own invalidations.
fn origin_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Relaxed)
    )
}

/// Subscribe to `channel` and evict what other processes changed; reconnect with
/// backoff when Redis goes away, clearing the memory tier after each reconnect.
async fn listen<L: Cache>(
    client: redis::Client,
    channel: String,
    origin: String,
    local: std::sync::Weak<L>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    loop {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match subscribed.await {
            Ok(mut pubsub) => {
                backoff = Duration::from_millis(100);
                let Some(cache) = local.upgrade() else { return };
                if !first {
                    // Invalidations sent while we were away are lost: start clean.
                    let _ = cache.clear().await;
                }
                drop(cache);
                first = false;
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    let Some(cache) = local.upgrade() else { return };
                    let payload = String::from_utf8_lossy(msg.get_payload_bytes()).into_owned();
                    let Some((from, key)) = payload.split_once('|') else {
                        continue;
                    };
                    if from == origin {
                        continue;
                    }
                    let _ = if key == CLEAR_ALL {
                        cache.clear().await.map(|_| ())
                    } else {
                        cache.delete(key).await.map(|_| ())
                    };
                }
                tracing::warn!(%channel, "invalidation channel closed; reconnecting");
            }
            Err(e) => {
                if local.strong_count() == 0 {
                    return;
                }
                tracing::debug!(%channel, error = %e, "invalidation subscribe failed; retrying");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
