use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use arc_swap::ArcSwapOption;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cortex_metrics::Metrics;
use cortex_pool::{RedisConnection, RedisPool};
use cortex_support::keyspace::{SLOTS, hash_slot};
use cortex_support::warn::WarnLimiter;
use redis::FromRedisValue;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use tracing::Instrument;

use self::coalesce::{Answer, Coalescer, GetReq, SetReq};
use crate::stats::Recorder;
use crate::{Cache, CacheStats, Error, RedisCacheConfig, Result};

#[path = "coalesce.rs"]
mod coalesce;

/// Keys `clear` asks `SCAN` for per round trip.
const SCAN_COUNT: u32 = 500;
/// Nodes an invalidation `PUBLISH` is tried on, on a cluster.
const PUBLISH_TRIES: usize = 3;
/// Bound on each of those tries (or the pool's timeout, when shorter).
const PUBLISH_TRY_TIMEOUT: Duration = Duration::from_secs(1);

/// A [`Cache`] on Redis, over a [`RedisPool`]: every key is prefixed with the
/// namespace, a `set` without TTL gets the default TTL, and `clear` removes the
/// namespace only, with `SCAN` + `UNLINK` (never `KEYS`, which blocks the server).
///
/// TTLs are sent in milliseconds (`SET .. PX`), so sub-second TTLs work.
///
/// The namespace is checked when the cache is built (see
/// [`RedisCacheConfig::namespace`]): it ends in `:` and stays out of the keys of other
/// Cortex components, so `clear` never deletes, say, a durable queue's tasks.
///
/// # In a Redis outage
///
/// Every fault is counted in [`CacheStats::errors`]. What the caller sees:
///
/// - **Reads degrade to misses** with `degrade_on_error` (the default): `get` → `None`,
///   `get_many` → all `None`, `exists` → `false`, the fault logged at most once a
///   second (with the number of warnings suppressed since).
/// - **Writes and deletes return the error**, always: `set`, `set_many`, `delete`,
///   `clear`, `increment`. A write or an invalidation that did not land must not look
///   as if it did: after a database write, a `delete` that silently failed would leave
///   Redis serving the old value for its whole TTL. Retry it, or fail the request.
///
/// Every command waits at most the pool's `pool_timeout` (one more per 100 commands of
/// a pipeline). After a connection-level fault the store is left alone for 500 ms (a
/// minimal circuit breaker): reads answer an immediate miss, writes an immediate
/// [`Error::Unavailable`], instead of each waiting out a connect timeout. Reads and
/// deletes that meet a connection dropped while idle (a Redis restart) are sent once
/// more on a fresh connection, since repeating them is harmless; a `set` is not (a late
/// duplicate could land after a newer write), so it returns the error.
///
/// Broken connections are replaced on check-out by the pool's `pre_ping` (on by
/// default); keep it on, or a restarted Redis leaves dead connections in the pool.
///
/// # On a Redis Cluster
///
/// Over a pool in cluster mode (`REDIS_CLUSTER_URLS`) every call works as on one
/// server: a key goes to the master of its hash slot, `get_many` (`MGET`) and
/// `set_many` (a pipeline) are split per slot by the client (each part atomic, not the
/// whole), and `clear` runs `SCAN` + `UNLINK` on every master that serves slots, one
/// key per `UNLINK` (pipelined). Keys spread over the masters by their whole name; a
/// caller who needs keys in one slot gives them one hash tag (`{user:7}:profile` and
/// `{user:7}:posts`: only the part inside the first `{...}` is hashed), and a namespace
/// holding a whole tag (`app:{users}:`) keeps all its keys in one slot.
///
/// While one master fails over (its replica takes over after the cluster's node
/// timeout), calls on its slots fail as above (reads miss, writes return a retryable
/// error) and calls on the other masters' slots go on: the breaker opens per range of
/// 128 hash slots, not for the whole store. A `clear` meanwhile fails with the
/// retryable [`Error::Cluster`] (a master's keys cannot be reached).
///
/// ```no_run
/// use cortex_cache::{Cache, RedisCache, RedisCacheConfig};
/// use cortex_pool::{RedisConfig, RedisPool};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = RedisPool::new(RedisConfig::from_env()?).await?;
/// let cache = RedisCache::new(pool, RedisCacheConfig::from_env()?)?;
/// cache.set("greeting", b"hello", None).await?; // key `cortex:cache:greeting`, TTL 300 s
/// assert_eq!(cache.get("greeting").await?.as_deref(), Some(&b"hello"[..]));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RedisCache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: RedisPool,
    config: RedisCacheConfig,
    /// `SCAN MATCH` pattern of the namespace, glob characters escaped.
    pattern: String,
    stats: Recorder,
    warnings: WarnLimiter,
    breaker: Breaker,
    /// The connection every command shares, single-server or cluster (none until first
    /// use, or after a connection-level fault).
    shared: ArcSwapOption<RedisConnection>,
    /// Concurrent `get`s made one `MGET`, concurrent `set`s one pipeline (single server,
    /// when [`RedisCacheBuilder::coalesce`] turned it on; see `coalesce`).
    coalescer: Option<Coalescer>,
}

impl RedisCache {
    /// A builder over `pool`, starting from [`RedisCacheConfig::default`] (namespace
    /// `cortex:cache:`).
    pub fn builder(pool: RedisPool) -> RedisCacheBuilder {
        RedisCacheBuilder {
            pool,
            config: RedisCacheConfig::default(),
            stats: Recorder::default(),
            coalesce: false,
        }
    }

    /// A cache over `pool`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad config, such as a namespace that does not end
    /// in `:` or reaches into another component's keys.
    pub fn new(pool: RedisPool, config: RedisCacheConfig) -> Result<Self> {
        Self::build(pool, config, Recorder::default(), false)
    }

    /// As [`new`](Self::new), also counting into `registry` under the label
    /// `cache="<name>"`: the counters `cache.hits`, `cache.misses`, `cache.sets`,
    /// `cache.deletes` and `cache.errors`, exported as
    /// `cortex_cache_hits_total{cache="<name>"}` and so on. It registers no
    /// `cache.entries` or `cache.size_bytes` gauge: the entry count of a namespace is
    /// known only from a scan of the server, too slow for a scrape, and Redis evicts on
    /// its own (no `cache.evictions` either).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_metrics(
        pool: RedisPool,
        config: RedisCacheConfig,
        registry: &Metrics,
        name: &str,
    ) -> Result<Self> {
        Self::build(
            pool,
            config,
            Recorder::with_metrics(registry, name, false),
            false,
        )
    }

    fn build(
        pool: RedisPool,
        config: RedisCacheConfig,
        stats: Recorder,
        coalesce: bool,
    ) -> Result<Self> {
        config.validate()?;
        let pattern = format!("{}*", escape_glob(&config.namespace));
        let cluster = pool.is_cluster();
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                config,
                pattern,
                stats,
                warnings: WarnLimiter::default(),
                breaker: Breaker::new(cluster),
                shared: ArcSwapOption::empty(),
                coalescer: (coalesce && !cluster).then(Coalescer::default),
            }),
        })
    }

    /// The config in force.
    pub fn config(&self) -> &RedisCacheConfig {
        &self.inner.config
    }

    /// The pool this cache draws connections from.
    pub fn pool(&self) -> &RedisPool {
        &self.inner.pool
    }

    /// The debug span `name` (`cache.get`, `cache.set`, `cache.delete`) of one call,
    /// naming the namespace; `hit` is recorded by `get`. Disabled, it costs a level check.
    fn span(&self, name: &'static str) -> tracing::Span {
        match name {
            "cache.get" => tracing::debug_span!(
                "cache.get",
                cache = "redis",
                namespace = self.inner.config.namespace.as_str(),
                hit = tracing::field::Empty
            ),
            "cache.set" => tracing::debug_span!(
                "cache.set",
                cache = "redis",
                namespace = self.inner.config.namespace.as_str()
            ),
            _ => tracing::debug_span!(
                "cache.delete",
                cache = "redis",
                namespace = self.inner.config.namespace.as_str()
            ),
        }
    }

    /// The Redis key of `key`: the namespace followed by `key`.
    pub fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.inner.config.namespace)
    }

    fn ttl_ms(&self, ttl: Option<Duration>) -> u64 {
        let d = ttl.unwrap_or(self.inner.config.default_ttl);
        // Round up, and never send 0 (Redis rejects it): a TTL means "expire soon",
        // not "do not store".
        u64::try_from(d.as_nanos().div_ceil(1_000_000))
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// The connection to run a command on, unless the store is cooling down after a
    /// fault. All commands share one multiplexed connection taken from the pool (redis
    /// pipelines them), so a command costs no pool check-out; a broken one is replaced
    /// from the pool, whose pre-ping hands out only live connections.
    async fn conn(&self) -> Result<Conn> {
        self.inner.breaker.check()?;
        if let Some(c) = self.inner.shared.load_full() {
            return Ok(Conn {
                conn: RedisConnection::clone(&c),
                shared: c,
            });
        }
        self.fresh_conn().await
    }

    /// A connection from the pool, made the shared one.
    async fn fresh_conn(&self) -> Result<Conn> {
        let pooled = self.inner.pool.acquire().await.map_err(|e| {
            self.inner.breaker.trip();
            Error::Pool(e)
        })?;
        // The `RedisConnection` itself, never what it dereferences to: on a cluster that
        // would be one seed node's plain connection.
        let conn = RedisConnection::clone(&pooled);
        let shared = Arc::new(conn.clone());
        self.inner.shared.store(Some(Arc::clone(&shared)));
        Ok(Conn { conn, shared })
    }

    /// Note the outcome of a command on `conn`. A connection-level failure (an answered
    /// error is not one) drops the shared connection, unless another caller already
    /// replaced it, and leaves the store alone for a moment.
    ///
    /// `keys` are the Redis keys of the command: on a cluster only their breakers open
    /// (see [`Breaker`]); none stands for the whole store.
    fn observe<T>(&self, conn: &Conn, keys: &[&str], r: redis::RedisResult<T>) -> Result<T> {
        r.map_err(|e| {
            if is_connection_fault(&e) {
                self.forget(conn);
                self.inner.breaker.trip_keys(keys);
            } else if is_transient(&e) {
                // A cluster answering "not now" for a slot (failover under way): the
                // connection is fine, the keys' master is not.
                self.inner.breaker.trip_keys(keys);
            }
            Error::Redis(e)
        })
    }

    /// Stop sharing `conn` (only if it is still the shared one).
    fn forget(&self, conn: &Conn) {
        self.inner.shared.compare_and_swap(&conn.shared, None);
    }

    /// Run `cmd`. With `Retry::Once`, a command that met a dropped connection (the shared
    /// one died while idle, as after a Redis restart) is sent once more on a fresh
    /// connection before the fault counts: only for commands that are harmless to repeat
    /// late (reads, deletes).
    /// `keys` are the Redis keys `cmd` touches (see [`observe`](Self::observe)).
    async fn query<T: FromRedisValue>(
        &self,
        keys: &[&str],
        cmd: &redis::Cmd,
        retry: Retry,
    ) -> Result<T> {
        self.inner.breaker.check_keys(keys)?;
        let mut conn = self.conn().await?;
        let first = self.bounded(cmd.query_async(&mut conn.conn)).await;
        match first {
            Err(e) if retry == Retry::Once && is_dropped(&e) => {
                self.forget(&conn);
                let mut conn = self.fresh_conn().await?;
                let second = self.bounded(cmd.query_async(&mut conn.conn)).await;
                self.observe(&conn, keys, second)
            }
            r => self.observe(&conn, keys, r),
        }
    }

    /// `call`, given at most the pool's timeout. redis-rs bounds each answer by it, but
    /// a cluster connection retries a command whose slot has no master for longer (the
    /// whole failover, seconds): the caller's wait stays bounded, and a read degrades to
    /// a miss in time.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> redis::RedisResult<T> {
        self.bounded_n(1, call).await
    }

    /// As [`bounded`](Self::bounded), for `n` commands (a pipeline): one more pool
    /// timeout per 100 of them, as a long pipeline takes its time even on a healthy
    /// server.
    async fn bounded_n<T>(
        &self,
        n: usize,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> redis::RedisResult<T> {
        let per = self.inner.pool.config().pool_timeout;
        let limit = per.saturating_mul(u32::try_from(1 + n / 100).unwrap_or(u32::MAX));
        match tokio::time::timeout(limit, call).await {
            Ok(r) => r,
            Err(_) => Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {limit:?}"),
            ))),
        }
    }

    async fn query_pipe<T: FromRedisValue>(
        &self,
        keys: &[&str],
        pipe: &redis::Pipeline,
    ) -> Result<T> {
        self.inner.breaker.check_keys(keys)?;
        let mut conn = self.conn().await?;
        let n = pipe.cmd_iter().count();
        let r = self.bounded_n(n, pipe.query_async(&mut conn.conn)).await;
        self.observe(&conn, keys, r)
    }

    /// A read met `error`: count it, then either return it or, when degrading, log it
    /// and answer `fallback` (a miss).
    fn read_fault<T>(&self, op: &'static str, error: Error, fallback: T) -> Result<T> {
        self.inner.stats.error();
        if self.inner.config.degrade_on_error && error.is_backend() {
            self.inner.warnings.note(|suppressed| {
                tracing::warn!(
                    op,
                    namespace = %self.inner.config.namespace,
                    suppressed,
                    error = %cortex_support::error_chain(&error),
                    "redis cache fault answered as a miss"
                );
            });
            Ok(fallback)
        } else {
            Err(error)
        }
    }

    /// A write or delete met `error`: count it and return it, whatever
    /// `degrade_on_error` says (see the type's docs).
    fn write_fault<T>(&self, error: Error) -> Result<T> {
        self.inner.stats.error();
        Err(error)
    }

    /// `PUBLISH message` on `channel`, on the shared connection; the number of
    /// subscribers that received it.
    ///
    /// On a cluster it goes to any node: a cluster relays a `PUBLISH` over its bus to
    /// every node, while redis-rs would send it to the master of the channel's hash
    /// slot, which answers nothing while it fails over. First to `prefer` (`host:port`,
    /// the node this process's listener is subscribed on, so known to be up), then to
    /// nodes picked at random, [`PUBLISH_TRIES`] tries in all, each bounded.
    pub(crate) async fn publish(
        &self,
        channel: &str,
        message: &str,
        prefer: Option<&str>,
    ) -> Result<u64> {
        let cmd = redis::cmd("PUBLISH").arg(channel).arg(message).to_owned();
        if !self.inner.pool.is_cluster() {
            return self.query::<u64>(&[], &cmd, Retry::No).await;
        }
        let mut conn = self.conn().await?;
        let per_try = self
            .inner
            .pool
            .config()
            .pool_timeout
            .min(PUBLISH_TRY_TIMEOUT);
        let preferred = prefer
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(host, port)| {
                Some(SingleNodeRoutingInfo::ByAddress {
                    host: host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_owned(),
                    port: port.parse().ok()?,
                })
            });
        let routes = preferred
            .into_iter()
            .chain(std::iter::repeat(SingleNodeRoutingInfo::Random))
            .take(PUBLISH_TRIES);
        let mut last = None;
        for route in routes {
            let Some(cluster) = conn.conn.as_cluster_mut() else {
                // The pool lends cluster connections only in cluster mode.
                return self.query::<u64>(&[], &cmd, Retry::No).await;
            };
            let route = RoutingInfo::SingleNode(route);
            let sent = tokio::time::timeout(per_try, cluster.route_command(cmd.clone(), route));
            match sent.await {
                Ok(Ok(v)) => {
                    let receivers =
                        redis::from_redis_value::<u64>(v).map_err(redis::RedisError::from);
                    return self.observe(&conn, &[], receivers);
                }
                Ok(Err(e)) if is_transient(&e) => last = Some(e),
                Ok(Err(e)) => return self.observe(&conn, &[], Err(e)),
                Err(_) => {
                    last = Some(redis::RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "PUBLISH got no answer in time",
                    )));
                }
            }
        }
        match last {
            Some(e) => self.observe(&conn, &[], Err(e)),
            None => Ok(0),
        }
    }

    /// `SCAN` + `UNLINK` of the namespace on every master (the one server, or each
    /// master of a cluster that serves slots: `SCAN` sees one node's keys only). The
    /// scanned keys span slots, so each goes in an `UNLINK` of its own, pipelined (a
    /// multi-key `UNLINK` over several slots is refused by a cluster node).
    async fn scan_unlink(&self) -> Result<u64> {
        self.inner.breaker.check()?;
        let masters = self.inner.pool.masters().await.map_err(|e| match e {
            // What `masters` says while a master that serves slots is down: the clear
            // cannot reach every key now, and can once the failover is over.
            e @ (cortex_pool::Error::Backend { .. } | cortex_pool::Error::MasterDown { .. }) => {
                Error::Cluster { source: e }
            }
            e => Error::Pool(e),
        })?;
        let mut removed = 0u64;
        for mut master in masters {
            removed += self.scan_unlink_on(&mut master).await?;
        }
        Ok(removed)
    }

    /// `SCAN` + `UNLINK` of the namespace on one node.
    async fn scan_unlink_on(&self, conn: &mut RedisConnection) -> Result<u64> {
        let mut cursor = 0u64;
        let mut removed = 0u64;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&self.inner.pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(conn)
                .await?;
            if !keys.is_empty() {
                let mut pipe = redis::pipe();
                for key in &keys {
                    pipe.cmd("UNLINK").arg(key);
                }
                let unlinked: Vec<u64> = pipe.query_async(conn).await?;
                removed += unlinked.iter().sum::<u64>();
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }
}

impl RedisCache {
    /// The value of the Redis key `full`. A read that finds another under way queues
    /// for the coalescer's next `MGET` (single server); one alone is sent at once.
    /// Either way the caller waits at most the pool's timeout.
    async fn get_one(&self, full: String) -> Result<Option<Vec<u8>>> {
        let Some(coalescer) = &self.inner.coalescer else {
            return self
                .query(&[&full], redis::cmd("GET").arg(&full), Retry::Once)
                .await;
        };
        let (busy, _counted) = coalescer.gets.enter();
        if busy {
            self.inner.breaker.check()?;
            let (reply, answer) = tokio::sync::oneshot::channel();
            // A copy for the flusher: the key is needed here again if it cannot answer.
            let req = GetReq {
                key: full.clone(),
                reply,
            };
            if coalescer.gets.submit(self, req) {
                match self.wait(answer).await {
                    Waited::Answer(r) => return r,
                    // The flusher could not send (the reason shows up again below, as
                    // a typed error) or ended with its runtime: send the read alone.
                    Waited::NotSent | Waited::FlusherGone => {}
                }
            }
        }
        self.query(&[&full], redis::cmd("GET").arg(&full), Retry::Once)
            .await
    }

    /// `SET full value PX ttl_ms`: queued for the coalescer's next pipeline when another
    /// write is under way (single server), sent at once when alone. The caller waits at
    /// most the pool's timeout.
    async fn set_one(&self, full: String, value: &[u8], ttl_ms: u64) -> Result<()> {
        let direct = |full: &str| {
            redis::cmd("SET")
                .arg(full)
                .arg(value)
                .arg("PX")
                .arg(ttl_ms)
                .to_owned()
        };
        let Some(coalescer) = &self.inner.coalescer else {
            return self.query::<()>(&[&full], &direct(&full), Retry::No).await;
        };
        let (busy, _counted) = coalescer.sets.enter();
        if busy {
            self.inner.breaker.check()?;
            let (reply, answer) = tokio::sync::oneshot::channel();
            let req = SetReq {
                key: full.clone(),
                value: value.to_vec(),
                ttl_ms,
                reply,
            };
            if coalescer.sets.submit(self, req) {
                match self.wait(answer).await {
                    Waited::Answer(r) => return r,
                    // Not sent (the reason shows up again below, as a typed error).
                    Waited::NotSent => {}
                    // It may have been sent: sending it again could land a late
                    // duplicate over a newer write.
                    Waited::FlusherGone => {
                        return Err(Error::Redis(redis::RedisError::from(std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            "the write's batch was abandoned (its runtime shut down)",
                        ))));
                    }
                }
            }
        }
        self.query::<()>(&[&full], &direct(&full), Retry::No).await
    }

    /// The answer of a queued call, waited for at most the pool's timeout (even if its
    /// batch takes longer).
    async fn wait<T>(&self, answer: tokio::sync::oneshot::Receiver<Answer<T>>) -> Waited<T> {
        let limit = self.inner.pool.config().pool_timeout;
        match tokio::time::timeout(limit, answer).await {
            Ok(Ok(Some(r))) => Waited::Answer(r.map_err(Error::Redis)),
            Ok(Ok(None)) => Waited::NotSent,
            Ok(Err(_)) => Waited::FlusherGone,
            Err(_) => Waited::Answer(Err(Error::Redis(redis::RedisError::from(
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {limit:?}"),
                ),
            )))),
        }
    }
}

/// How the wait for a queued call ended.
enum Waited<T> {
    /// Its outcome (or its timeout).
    Answer(Result<T>),
    /// The flusher had no connection to send its batch on.
    NotSent,
    /// The flusher ended (its runtime shut down) before answering.
    FlusherGone,
}

/// A connection to run commands on, and the shared one it was cloned from.
struct Conn {
    conn: RedisConnection,
    shared: Arc<RedisConnection>,
}

/// Whether a command may be sent again after its connection dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Harmless to repeat, even late: reads, deletes.
    Once,
    /// Not: a late duplicate `SET` could overwrite a newer value.
    No,
}

/// A fault of the connection or the server's reachability, as opposed to an answered
/// error (wrong type, script error), which says nothing about the connection.
pub(crate) fn is_connection_fault(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

/// A fault that time can clear: a connection fault, no connection to the node of a slot
/// (a cluster node that died), or an answer saying "not now" (`CLUSTERDOWN`, `TRYAGAIN`,
/// `MASTERDOWN`, `LOADING`: what a cluster says during a failover).
pub(crate) fn is_transient(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind, RetryMethod};
    is_connection_fault(e)
        || e.kind() == ErrorKind::ClusterConnectionNotFound
        || (matches!(e.kind(), ErrorKind::Server(_))
            && matches!(
                e.retry_method(),
                RetryMethod::WaitAndRetry | RetryMethod::RetryImmediately
            ))
}

/// The connection was closed under the command (not a timeout: a timed-out command may
/// still be running on a live server).
fn is_dropped(e: &redis::RedisError) -> bool {
    e.is_connection_dropped() && !e.is_timeout()
}

impl Cache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let span = self.span("cache.get");
        let got = self
            .get_one(self.full_key(key))
            .instrument(span.clone())
            .await
            .or_else(|e| self.read_fault("get", e, None))?;
        self.inner.stats.read(got.is_some());
        span.record("hit", got.is_some());
        Ok(got)
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        match self
            .set_one(self.full_key(key), value, self.ttl_ms(ttl))
            .instrument(self.span("cache.set"))
            .await
        {
            Ok(()) => {
                self.inner.stats.sets(1);
                Ok(())
            }
            Err(e) => self.write_fault(e),
        }
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let full = self.full_key(key);
        let removed = self
            .query::<u64>(&[&full], redis::cmd("DEL").arg(&full), Retry::Once)
            .instrument(self.span("cache.delete"))
            .await
            .map(|n| n > 0)
            .or_else(|e| self.write_fault(e))?;
        if removed {
            self.inner.stats.deletes(1);
        }
        Ok(removed)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let full = self.full_key(key);
        self.query::<u64>(&[&full], redis::cmd("EXISTS").arg(&full), Retry::Once)
            .await
            .map(|n| n > 0)
            .or_else(|e| self.read_fault("exists", e, false))
    }

    async fn clear(&self) -> Result<u64> {
        match self.scan_unlink().await {
            Ok(n) => {
                self.inner.stats.deletes(n);
                Ok(n)
            }
            Err(e) => {
                self.inner.stats.error();
                Err(e)
            }
        }
    }

    async fn increment(&self, key: &str, by: i64) -> Result<i64> {
        let full = self.full_key(key);
        // EXPIRE NX (Redis 7+) gives a counter INCRBY just created the default TTL and
        // leaves an existing counter's TTL alone.
        let pipe = redis::pipe()
            .cmd("INCRBY")
            .arg(&full)
            .arg(by)
            .cmd("PEXPIRE")
            .arg(&full)
            .arg(self.ttl_ms(None))
            .arg("NX")
            .ignore()
            .to_owned();
        match self.query_pipe::<(i64,)>(&[&full], &pipe).await {
            Ok((n,)) => Ok(n),
            Err(Error::Redis(e)) if e.to_string().contains("not an integer") => {
                Err(Error::NotAnInteger {
                    key: key.to_owned(),
                })
            }
            Err(e) => {
                self.inner.stats.error();
                Err(e)
            }
        }
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let full: Vec<String> = keys.iter().map(|k| self.full_key(k)).collect();
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        let values: Vec<Option<Vec<u8>>> = self
            .query(&refs, redis::cmd("MGET").arg(&full), Retry::Once)
            .await
            .or_else(|e| self.read_fault("get_many", e, vec![None; keys.len()]))?;
        let hits = values.iter().filter(|v| v.is_some()).count() as u64;
        self.inner.stats.hits(hits);
        self.inner.stats.misses(values.len() as u64 - hits);
        Ok(values)
    }

    async fn set_many(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let ms = self.ttl_ms(ttl);
        let full: Vec<String> = items.iter().map(|(k, _)| self.full_key(k)).collect();
        let mut pipe = redis::pipe();
        for (key, (_, value)) in full.iter().zip(items) {
            pipe.cmd("SET")
                .arg(key)
                .arg(*value)
                .arg("PX")
                .arg(ms)
                .ignore();
        }
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        match self.query_pipe::<()>(&refs, &pipe).await {
            Ok(()) => {
                self.inner.stats.sets(items.len() as u64);
                Ok(())
            }
            Err(e) => self.write_fault(e),
        }
    }

    fn stats(&self) -> CacheStats {
        self.inner.stats.snapshot()
    }
}

/// Builds a [`RedisCache`]; from [`RedisCache::builder`].
///
/// ```no_run
/// use std::time::Duration;
/// use cortex_cache::RedisCache;
/// use cortex_pool::{RedisConfig, RedisPool};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = RedisPool::new(RedisConfig::from_env()?).await?;
/// let sessions = RedisCache::builder(pool)
///     .namespace("sessions:")
///     .default_ttl(Duration::from_secs(3600))
///     .metrics(cortex_metrics::global(), "sessions")
///     .build()?;
/// # Ok(())
/// # }
/// ```
#[must_use]
#[derive(Debug)]
pub struct RedisCacheBuilder {
    pool: RedisPool,
    config: RedisCacheConfig,
    stats: Recorder,
    coalesce: bool,
}

impl RedisCacheBuilder {
    /// Coalesce concurrent calls (off by default; ignored on a Redis Cluster): a `get`
    /// that finds another `get` on the wire queues, and what queued goes as one `MGET`
    /// once that one is answered; `set`s likewise go as one pipeline of
    /// `SET k v PX ttl`. A lone call is sent at once, as without it. Each caller still
    /// gets its own value, miss or error, waits at most the pool's timeout, and counts
    /// in the stats as before.
    ///
    /// Measure before turning it on: one batch is on the wire at a time, so every
    /// queued call waits out the round trip before it, and batching pays only when the
    /// server's per-command work outweighs that. On the repository's bench (one host,
    /// 2 cores, 50 tasks; `docs/benchmarks.md`) it ran 1.3x raw redis-rs `GET`s on a
    /// quiet machine but 0.3-0.5x when other processes loaded the cores.
    pub fn coalesce(mut self, on: bool) -> Self {
        self.coalesce = on;
        self
    }

    /// Replace the whole config (e.g. one from [`RedisCacheConfig::from_env`]).
    pub fn config(mut self, config: RedisCacheConfig) -> Self {
        self.config = config;
        self
    }

    /// See [`RedisCacheConfig::namespace`].
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.config.namespace = namespace.into();
        self
    }

    /// See [`RedisCacheConfig::default_ttl`].
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.config.default_ttl = ttl;
        self
    }

    /// See [`RedisCacheConfig::degrade_on_error`].
    pub fn degrade_on_error(mut self, on: bool) -> Self {
        self.config.degrade_on_error = on;
        self
    }

    /// Also count into `registry`, as [`RedisCache::with_metrics`] does: the counters
    /// `cache.hits`, `cache.misses`, `cache.sets`, `cache.deletes` and `cache.errors`
    /// labeled `cache="<name>"` (no level gauges).
    pub fn metrics(mut self, registry: &Metrics, name: &str) -> Self {
        self.stats = Recorder::with_metrics(registry, name, false);
        self
    }

    /// The cache.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the variable of a bad value (the namespace is
    /// checked as in [`RedisCacheConfig::validate`]).
    pub fn build(self) -> Result<RedisCache> {
        RedisCache::build(self.pool, self.config, self.stats, self.coalesce)
    }
}

/// `namespace` with the `SCAN MATCH` glob characters `* ? [ ] \` escaped, so a
/// namespace like `a*:` matches itself and not `abc:`.
pub(crate) fn escape_glob(namespace: &str) -> String {
    let mut out = String::with_capacity(namespace.len() + 4);
    for c in namespace.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// After a connection-level fault the store is left alone for a moment, then tried
/// again by the next caller (a minimal circuit breaker): during an outage callers get
/// an immediate miss instead of waiting out the pool's timeout on every request.
///
/// On a Redis Cluster one master can fail while the others serve: a fault of a command
/// on keys then opens the breaker of those keys' hash-slot ranges only ([`RANGES`] of
/// 128 slots each, about the granularity at which masters split the slots), so the
/// keys of the masters that are up keep being served. A fault that is not about keys
/// (no pooled connection, a failed `PUBLISH`) opens the whole store's breaker.
#[derive(Debug)]
struct Breaker {
    base: Instant,
    /// Milliseconds after `base` until which the store is left alone; 0 = closed.
    /// Atomics, not a lock: every call checks them.
    open_until_ms: AtomicU64,
    /// Per slot range, on a cluster (empty for a single server).
    ranges: Box<[AtomicU64]>,
}

/// Slot ranges with a breaker of their own, on a cluster.
const RANGES: usize = 128;

impl Breaker {
    const COOL_DOWN: Duration = Duration::from_millis(500);

    fn new(cluster: bool) -> Self {
        let ranges = if cluster { RANGES } else { 0 };
        Self {
            base: Instant::now(),
            open_until_ms: AtomicU64::new(0),
            ranges: (0..ranges).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    #[inline]
    fn check_one(&self, until: &AtomicU64) -> Result<()> {
        let until = until.load(Relaxed);
        if until == 0 {
            return Ok(());
        }
        let now = self.now_ms();
        if now < until {
            Err(Error::Unavailable {
                retry_in: Duration::from_millis(until - now),
            })
        } else {
            Ok(())
        }
    }

    /// The whole store's breaker.
    #[inline]
    fn check(&self) -> Result<()> {
        self.check_one(&self.open_until_ms)
    }

    /// The breakers of `keys` (Redis keys): open when any of them is.
    #[inline]
    fn check_keys(&self, keys: &[&str]) -> Result<()> {
        if self.ranges.is_empty() {
            return Ok(());
        }
        keys.iter()
            .try_for_each(|k| self.check_one(&self.ranges[range_of(k)]))
    }

    fn open(&self, until: &AtomicU64) {
        let at = self.now_ms() + Self::COOL_DOWN.as_millis() as u64;
        until.store(at.max(1), Relaxed);
    }

    /// Open the whole store's breaker.
    fn trip(&self) {
        self.open(&self.open_until_ms);
    }

    /// Open the breakers of `keys` (the whole store's, on a single server or for no
    /// keys).
    fn trip_keys(&self, keys: &[&str]) {
        if self.ranges.is_empty() || keys.is_empty() {
            return self.trip();
        }
        for k in keys {
            self.open(&self.ranges[range_of(k)]);
        }
    }
}

/// The breaker range of the Redis key `key`.
#[inline]
fn range_of(key: &str) -> usize {
    usize::from(hash_slot(key.as_bytes())) * RANGES / usize::from(SLOTS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(escape_glob("cortex:"), "cortex:");
        assert_eq!(escape_glob(r"a*b?[c]\d:"), r"a\*b\?\[c\]\\d:");
    }

    #[test]
    fn a_cluster_breaker_opens_per_slot_range() {
        let b = Breaker::new(true);
        b.trip_keys(&["foo"]);
        assert!(matches!(
            b.check_keys(&["foo"]),
            Err(Error::Unavailable { .. })
        ));
        assert!(b.check_keys(&["bar"]).is_ok());
        assert!(b.check().is_ok());
        b.trip_keys(&[]);
        assert!(b.check().is_err());
        let single = Breaker::new(false);
        single.trip_keys(&["foo"]);
        assert!(single.check().is_err());
        assert!(single.check_keys(&["bar"]).is_ok());
    }
}
