use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::invalidation::{self, CLEAR_ALL, ListenerStats, Local};
use crate::redis_config::check_namespace;
use crate::{Cache, CacheStats, RedisCache, Result};
use tracing::Instrument;

/// A memory tier in front of Redis, coherent across processes: every write, delete or
/// clear is published on a Redis channel of the namespace (`<namespace>__invalidate`),
/// and every other `TwoTierCache` on that namespace evicts the key from its memory tier
/// when the message arrives (milliseconds on a healthy Redis).
///
/// - Reads try memory, then Redis, filling memory for at most `local_ttl`. A fill never
///   replaces a newer value: a write, delete or invalidation of the key that lands while
///   the fill is under way wins (each key's version is one atomic, checked around the
///   fill). Within a process, a read after a successful write sees that write or a newer
///   one.
/// - The invalidation listener bounds every wait, sends a keepalive `PING` every second
///   and gives a connection up when the answer takes over 2 s (or the connection
///   closes). It then resubscribes with backoff, and clears the memory tier on every
///   (re)subscription, since invalidations sent while it was away were missed. While it
///   is not subscribed, memory is neither filled nor written, only read and evicted.
///   [`ready`](Self::ready) waits for the subscription; [`listener_stats`](Self::listener_stats)
///   tells what the listener did.
///
/// # On a Redis Cluster
///
/// Invalidations use classic pub/sub (`PUBLISH`/`SUBSCRIBE`), which a cluster relays
/// over its bus to every node: a listener subscribed on any one node hears every
/// process. It subscribes on a master that is up (spread over the masters by a
/// per-process id), and when that node dies or stops answering its keepalive it
/// subscribes again at once on another node that is up (the lost one last; the pool's
/// seeds when the cluster cannot be asked), clearing the memory tier as on every
/// resubscription, without waiting for the failover. `PUBLISH` goes first to the
/// listener's own node (known to be up), then to nodes at random, three tries in all,
/// each bounded. [`listener_node`](Self::listener_node) tells the node in use.
/// (Sharded pub/sub, `SSUBSCRIBE`, would tie the channel to the master of its slot: a
/// failover of that master would stop every invalidation of the namespace until its
/// replica took over, and redis-rs resubscribes it silently, so missed messages could
/// not be detected.)
///
/// # In a Redis outage
///
/// Reads keep being served from memory where it holds the key, and otherwise degrade to
/// misses as [`RedisCache`] reads do. Writes, deletes, clears and increments return the
/// error, and take the key (or everything, for a clear) out of the memory tier first, so
/// this process does not keep serving a value the caller was told did not land. A write
/// that reached Redis but whose invalidation could not be published also returns the
/// error: other processes would keep their old copy for up to `local_ttl`.
///
/// ```no_run
/// use std::time::Duration;
/// use cortex_cache::{MemoryConfig, MemoryStore, RedisCache, RedisCacheConfig, TwoTierCache, Cache};
/// use cortex_pool::{RedisConfig, RedisPool};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = RedisPool::new(RedisConfig::from_env()?).await?;
/// let redis = RedisCache::new(pool, RedisCacheConfig::from_env()?)?;
/// let cache = TwoTierCache::new(MemoryStore::new(MemoryConfig::default())?, redis)?;
/// cache.ready(Duration::from_secs(5)).await?; // subscribed: other writers reach us
/// cache.set("user:1", b"ada", None).await?; // other processes drop their copy
/// # Ok(())
/// # }
/// ```
pub struct TwoTierCache<L: Cache> {
    local: Arc<Local<L>>,
    remote: RedisCache,
    channel: String,
    origin: String,
    local_ttl: Duration,
    listener: tokio::task::JoinHandle<()>,
    local_hits: AtomicU64,
}

impl<L: Cache> fmt::Debug for TwoTierCache<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwoTierCache")
            .field("remote", &self.remote)
            .field("channel", &self.channel)
            .field("local_ttl", &self.local_ttl)
            .field("listener", &self.local.status.stats())
            .finish_non_exhaustive()
    }
}

impl<L: Cache + 'static> TwoTierCache<L> {
    /// Put `local` in front of `remote`, with memory entries kept at most 60 s.
    ///
    /// The invalidation listener starts subscribing in the background; see
    /// [`ready`](Self::ready).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) when the Redis URL of the
    /// pool cannot make a pub/sub client, or the namespace (the prefix of the channel)
    /// is refused (see [`RedisCacheConfig::namespace`](crate::RedisCacheConfig::namespace)).
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
        let namespace = &remote.config().namespace;
        check_namespace(namespace)?;
        let channel = format!("{namespace}__invalidate");
        // The pool's own client, or the pool itself on a cluster (to find nodes that
        // are up): one path from the configured URLs to Redis.
        let source = if remote.pool().is_cluster() {
            invalidation::Source::Cluster(remote.pool().clone())
        } else {
            invalidation::Source::Single(Box::new(remote.pool().client().clone()))
        };
        let origin = invalidation::origin_id();
        let local = Arc::new(Local::new(local));
        let listener = invalidation::spawn(source, channel.clone(), origin.clone(), &local);
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
}

impl<L: Cache> TwoTierCache<L> {
    /// The memory tier.
    pub fn local(&self) -> &L {
        &self.local.cache
    }

    /// The Redis tier.
    pub fn remote(&self) -> &RedisCache {
        &self.remote
    }

    /// Wait, at most `within`, until the invalidation listener is subscribed, so writes
    /// of other processes reach this one from now on (until the connection is lost;
    /// the listener then resubscribes by itself).
    ///
    /// # Errors
    /// [`Error::Timeout`](crate::Error::Timeout) when it is not subscribed in time
    /// (Redis unreachable, say); the listener keeps trying.
    pub async fn ready(&self, within: Duration) -> Result<()> {
        self.local.status.ready(within).await
    }

    /// What the invalidation listener has done so far, and whether it is subscribed.
    pub fn listener_stats(&self) -> ListenerStats {
        self.local.status.stats()
    }

    /// On a Redis Cluster, the node (`host:port`) the invalidation listener is
    /// subscribed on now; `None` on a single server, or while not subscribed.
    pub fn listener_node(&self) -> Option<String> {
        self.local.status.node()
    }

    fn local_ttl(&self, ttl: Option<Duration>) -> Option<Duration> {
        Some(ttl.map_or(self.local_ttl, |t| t.min(self.local_ttl)))
    }

    /// Tell the other processes to drop `key` (or everything, for [`CLEAR_ALL`]).
    async fn publish(&self, key: &str) -> Result<()> {
        let node = self.local.status.node();
        self.remote
            .publish(
                &self.channel,
                &invalidation::message(&self.origin, key),
                node.as_deref(),
            )
            .await
            .map(|_| ())
    }

    /// The remote side of a change of `key` failed: take the key out of memory too, so
    /// this process does not serve a value the caller was told did not land.
    async fn failed<T>(&self, key: &str, error: crate::Error) -> Result<T> {
        if let Err(e) = self.local.evict(key).await {
            tracing::warn!(key, error = %cortex_support::error_chain(&e), "memory copy not dropped after a failed write");
        }
        Err(error)
    }

    /// Store `value`, just read from or written to Redis, in memory, unless a change of
    /// `key` raced with it: `version` is what the key's version must still be (as when
    /// the Redis call started, plus our own bump for a write). A copy that lost the race
    /// is not stored, or taken out again: the change that won may be newer. Returns
    /// whether the copy stayed.
    async fn fill(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        version: u64,
    ) -> Result<bool> {
        let versions = &self.local.versions;
        if !self.local.status.is_live() || versions.of(key) != version {
            return Ok(false);
        }
        self.local.cache.set(key, value, ttl).await?;
        if versions.of(key) != version {
            self.local.cache.delete(key).await?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Publish the invalidation of `key` whatever became of the memory tier's update
    /// (`local`), then report the first error.
    async fn publish_after<T>(&self, key: &str, local: Result<T>) -> Result<T> {
        let published = self.publish(key).await;
        let value = local?;
        published.map(|()| value)
    }
}

impl<L: Cache> Drop for TwoTierCache<L> {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl<L: Cache + 'static> TwoTierCache<L> {
    /// The debug span `name` of one write, naming the namespace.
    fn span(&self, name: &'static str) -> tracing::Span {
        let namespace = self.remote.config().namespace.as_str();
        if name == "cache.set" {
            tracing::debug_span!("cache.set", cache = "two_tier", namespace)
        } else {
            tracing::debug_span!("cache.delete", cache = "two_tier", namespace)
        }
    }

    async fn set_inner(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        let before = self.local.versions.of(key);
        if let Err(e) = self.remote.set(key, value, ttl).await {
            return self.failed(key, e).await;
        }
        // Our own change: bump the version, so fills under way give up, and keep our
        // value in memory only if no other change of the key came in between (its
        // order against ours in Redis is unknown).
        let seen = self.local.versions.bump(key);
        let local = async {
            let kept = seen == before
                && self
                    .fill(key, value, self.local_ttl(ttl), before + 1)
                    .await?;
            if !kept {
                self.local.cache.delete(key).await?;
            }
            Ok(())
        };
        let local = local.await;
        self.publish_after(key, local).await
    }

    async fn delete_inner(&self, key: &str) -> Result<bool> {
        let remote = match self.remote.delete(key).await {
            Ok(r) => r,
            Err(e) => return self.failed(key, e).await,
        };
        self.local.versions.bump(key);
        let local = self.local.cache.delete(key).await;
        let local = self.publish_after(key, local).await?;
        Ok(remote || local)
    }
}

impl<L: Cache + 'static> Cache for TwoTierCache<L> {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let span = tracing::debug_span!(
            "cache.get",
            cache = "two_tier",
            namespace = self.remote.config().namespace.as_str(),
            hit = tracing::field::Empty,
            tier = tracing::field::Empty
        );
        let got: Result<(Option<Vec<u8>>, &'static str)> = async {
            if let Some(v) = self.local.cache.get(key).await? {
                self.local_hits.fetch_add(1, Relaxed);
                return Ok((Some(v), "memory"));
            }
            let before = self.local.versions.of(key);
            let v = self.remote.get(key).await?;
            if let Some(v) = &v {
                self.fill(key, v, self.local_ttl(None), before).await?;
            }
            Ok((v, "redis"))
        }
        .instrument(span.clone())
        .await;
        let (v, tier) = got?;
        span.record("hit", v.is_some());
        if v.is_some() {
            span.record("tier", tier);
        }
        Ok(v)
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        let span = self.span("cache.set");
        self.set_inner(key, value, ttl).instrument(span).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let span = self.span("cache.delete");
        self.delete_inner(key).instrument(span).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.local.cache.exists(key).await? || self.remote.exists(key).await?)
    }

    async fn clear(&self) -> Result<u64> {
        let removed = match self.remote.clear().await {
            Ok(n) => n,
            Err(e) => {
                if let Err(e) = self.local.evict_all().await {
                    tracing::warn!(error = %cortex_support::error_chain(&e), "memory tier not cleared after a failed clear");
                }
                return Err(e);
            }
        };
        let local = self.local.evict_all().await;
        self.publish_after(CLEAR_ALL, local).await?;
        Ok(removed)
    }

    async fn increment(&self, key: &str, by: i64) -> Result<i64> {
        let v = match self.remote.increment(key, by).await {
            Ok(v) => v,
            Err(e) => return self.failed(key, e).await,
        };
        let local = self.local.evict(key).await;
        self.publish_after(key, local).await?;
        Ok(v)
    }

    /// The Redis tier's stats, with the reads answered from memory counted as hits.
    fn stats(&self) -> CacheStats {
        let mut s = self.remote.stats();
        s.hits += self.local_hits.load(Relaxed);
        s
    }
}
