//! [`Cortex`]: every part built from one [`CortexConfig`], and stopped in reverse order.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cortex_cache::{Cache, CacheStats, CachedCalls, MemoryStore, RedisCache, TwoTierCache};
use cortex_mcp::{McpClient, McpClientFactory};
use cortex_metrics::Metrics;
use cortex_pool::{DbPool, Limiter, PoolMetrics, PoolStatus, RedisPool, ReplicaStatus};
use cortex_profile::MemoryProfiler;
use cortex_tasks::PriorityQueue;
use cortex_tasks::durable::{DurableQueue, Registry, Worker, WorkerHandle};
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::{CortexConfig, Result};

/// The database pool: SQLite (embedded) or PostgreSQL, chosen by the URL. A PostgreSQL
/// pool has read replicas when `DB_REPLICA_URLS` is set: `acquire()` is always the
/// primary, `acquire_read()` a healthy replica (else the primary).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Database {
    /// An SQLite file (or `sqlite::memory:`).
    Sqlite(DbPool<sqlx::Sqlite>),
    /// A PostgreSQL server.
    Postgres(DbPool<sqlx::Postgres>),
}

impl Database {
    /// Size, idle, in use, max, waiting.
    pub fn status(&self) -> PoolStatus {
        match self {
            Self::Sqlite(p) => p.stats(),
            Self::Postgres(p) => p.stats(),
        }
    }

    /// Each read replica's health, lag and pool levels, in `DB_REPLICA_URLS` order
    /// (empty without replicas, and always for SQLite).
    pub fn replicas(&self) -> Vec<ReplicaStatus> {
        match self {
            Self::Sqlite(p) => p.replicas(),
            Self::Postgres(p) => p.replicas(),
        }
    }

    /// Close every connection (waits for the ones in use to come back).
    pub async fn close(&self) {
        match self {
            Self::Sqlite(p) => p.close().await,
            Self::Postgres(p) => p.close().await,
        }
    }
}

/// The shared cache: memory alone, or memory in front of Redis with invalidation
/// across processes. One type, so code that caches does not care which.
#[derive(Debug)]
#[non_exhaustive]
pub enum CortexCache {
    /// In process only.
    Memory(MemoryStore),
    /// Memory in front of Redis ([`TwoTierCache`]).
    TwoTier(TwoTierCache<MemoryStore>),
}

impl Cache for CortexCache {
    async fn get(&self, key: &str) -> cortex_cache::Result<Option<Vec<u8>>> {
        match self {
            Self::Memory(c) => c.get(key).await,
            Self::TwoTier(c) => c.get(key).await,
        }
    }

    async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> cortex_cache::Result<()> {
        match self {
            Self::Memory(c) => c.set(key, value, ttl).await,
            Self::TwoTier(c) => c.set(key, value, ttl).await,
        }
    }

    async fn delete(&self, key: &str) -> cortex_cache::Result<bool> {
        match self {
            Self::Memory(c) => c.delete(key).await,
            Self::TwoTier(c) => c.delete(key).await,
        }
    }

    async fn exists(&self, key: &str) -> cortex_cache::Result<bool> {
        match self {
            Self::Memory(c) => c.exists(key).await,
            Self::TwoTier(c) => c.exists(key).await,
        }
    }

    async fn clear(&self) -> cortex_cache::Result<u64> {
        match self {
            Self::Memory(c) => c.clear().await,
            Self::TwoTier(c) => c.clear().await,
        }
    }

    async fn increment(&self, key: &str, by: i64) -> cortex_cache::Result<i64> {
        match self {
            Self::Memory(c) => c.increment(key, by).await,
            Self::TwoTier(c) => c.increment(key, by).await,
        }
    }

    fn stats(&self) -> CacheStats {
        match self {
            Self::Memory(c) => c.stats(),
            Self::TwoTier(c) => c.stats(),
        }
    }
}

/// Assembles a [`Cortex`] from a [`CortexConfig`].
#[must_use]
pub struct CortexBuilder {
    config: CortexConfig,
    metrics: Option<Metrics>,
    mcp_services: Vec<String>,
    durable_registry: Option<Registry>,
}

impl std::fmt::Debug for CortexBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CortexBuilder")
            .field("config", &self.config)
            .field("mcp_services", &self.mcp_services)
            .finish_non_exhaustive()
    }
}

impl CortexBuilder {
    /// Record into `metrics` instead of a registry made from the config.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Connect the MCP client of each service whose `<NAME>_SERVICE_URL` is set; the
    /// others are skipped (see [`Cortex::mcp_client`]).
    pub fn mcp_services<S: Into<String>>(mut self, services: impl IntoIterator<Item = S>) -> Self {
        self.mcp_services = services.into_iter().map(Into::into).collect();
        self
    }

    /// With Redis configured, run a durable worker in this process with these
    /// handlers.
    pub fn durable_worker(mut self, registry: Registry) -> Self {
        self.durable_registry = Some(registry);
        self
    }

    /// Connect and start every part: metrics (and its reset task), the memory profiler
    /// (its periodic snapshots when enabled), the database pool, Redis, the cache, the
    /// admission limiter, the in-process queue, the durable queue and worker (with
    /// Redis), and the MCP clients.
    ///
    /// Scale-out comes from the config alone: with `redis.cluster_urls`
    /// (`REDIS_CLUSTER_URLS`) the Redis pool runs in cluster mode, and the cache's
    /// second tier and the durable queue run on it; with `db.replica_urls`
    /// (`DB_REPLICA_URLS`) the PostgreSQL pool opens one pool per read replica and
    /// checks each one in the background. A replica that is down at start does not fail
    /// the build (it starts out of rotation); a Redis Cluster that cannot be reached
    /// does, as a single Redis server does.
    ///
    /// # Errors
    /// The first part that fails to start, with its own error.
    pub async fn build(self) -> Result<Cortex> {
        let Self {
            config,
            metrics,
            mcp_services,
            durable_registry,
        } = self;
        let metrics = match metrics {
            Some(m) => m,
            None => Metrics::with_config(config.metrics.clone())?,
        };
        let mut background = vec![];
        if let Some(reset) = metrics.spawn_reset_task() {
            background.push(reset);
        }
        let profiler = MemoryProfiler::new(config.memory.clone())?;
        if let Some(snapshots) = profiler.spawn() {
            background.push(snapshots);
        }

        // The replicas (if any) record into the same registry, as `db-replica-<i>`.
        let database = if config.db.is_postgres() {
            Database::Postgres(
                DbPool::postgres_with(config.db.clone(), PoolMetrics::new(&metrics, "db")).await?,
            )
        } else {
            Database::Sqlite(
                DbPool::sqlite_with(config.db.clone(), PoolMetrics::new(&metrics, "db")).await?,
            )
        };
        let limiter = Limiter::with_metrics(
            config.limiter.clone(),
            PoolMetrics::new(&metrics, "limiter"),
        )?;

        let local = MemoryStore::with_metrics(config.cache.clone(), &metrics, "local")?;
        let (redis, cache, durable) = match &config.redis {
            None => (None, CortexCache::Memory(local), None),
            Some(redis_config) => {
                let pool = RedisPool::with_metrics(
                    redis_config.clone(),
                    PoolMetrics::new(&metrics, "redis"),
                )
                .await?;
                let remote = RedisCache::with_metrics(
                    pool.clone(),
                    config.redis_cache.clone(),
                    &metrics,
                    "redis",
                )?;
                let cache = CortexCache::TwoTier(TwoTierCache::new(local, remote)?);
                // The pool's client: one path to Redis, with its URL and TLS settings.
                let durable = DurableQueue::connect(&pool, config.durable.clone()).await?;
                (Some(pool), cache, Some(durable))
            }
        };
        let worker = match (&durable, durable_registry) {
            (Some(queue), Some(registry)) => Some(
                Worker::new(queue.clone(), registry)
                    .metrics(&metrics)
                    .spawn(),
            ),
            _ => None,
        };
        let tasks = PriorityQueue::with_metrics(config.tasks.clone(), &metrics)?;

        let mcp = McpClientFactory::with_lookup(config.mcp.clone(), |k| std::env::var(k).ok())
            .metrics(&metrics);
        let mut clients = vec![];
        for service in &mcp_services {
            match mcp.client(service).await {
                Ok(client) => clients.push(client),
                Err(cortex_mcp::Error::MissingEndpoint { .. }) => {
                    tracing::info!(service, "no endpoint configured; MCP client not started");
                }
                Err(e) => return Err(e.into()),
            }
        }

        Ok(Cortex {
            inner: Arc::new(Inner {
                config,
                metrics,
                profiler,
                database,
                redis,
                limiter,
                cache: Arc::new(CachedCalls::new(cache).ttl_jitter(0.1)),
                tasks,
                durable,
                worker: Mutex::new(worker),
                mcp,
                mcp_clients: clients,
                background: Mutex::new(background),
                closers: Mutex::new(vec![]),
            }),
        })
    }
}

type Closer = Box<dyn FnOnce() + Send>;

struct Inner {
    config: CortexConfig,
    metrics: Metrics,
    profiler: MemoryProfiler,
    database: Database,
    redis: Option<RedisPool>,
    limiter: Limiter,
    cache: Arc<CachedCalls<CortexCache>>,
    tasks: PriorityQueue,
    durable: Option<DurableQueue>,
    worker: Mutex<Option<WorkerHandle>>,
    mcp: McpClientFactory,
    mcp_clients: Vec<McpClient>,
    background: Mutex<Vec<JoinHandle<()>>>,
    closers: Mutex<Vec<(String, Closer)>>,
}

/// Every part, built and running. Cheap to clone (an `Arc` inside).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), cortex_core::Error> {
/// use std::time::Duration;
/// use cortex_core::{Cortex, CortexConfig};
///
/// let cortex = Cortex::builder(CortexConfig::default()).build().await?; // SQLite in memory
/// assert!(cortex.redis().is_none());
/// let report = cortex.shutdown(Duration::from_secs(5)).await;
/// assert!(report.is_complete());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Cortex {
    inner: Arc<Inner>,
}

/// Every URL is shown with its password redacted: the config redacts its own, and the
/// pools show only redacted URLs.
impl std::fmt::Debug for Cortex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cortex")
            .field("config", &self.inner.config)
            .field("database", &self.inner.database)
            .field("redis", &self.inner.redis)
            .finish_non_exhaustive()
    }
}

impl Cortex {
    /// A builder over `config`.
    pub fn builder(config: CortexConfig) -> CortexBuilder {
        CortexBuilder {
            config,
            metrics: None,
            mcp_services: vec![],
            durable_registry: None,
        }
    }

    /// The config it was built from.
    pub fn config(&self) -> &CortexConfig {
        &self.inner.config
    }

    /// The metrics registry every part records into.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The memory profiler.
    pub fn profiler(&self) -> &MemoryProfiler {
        &self.inner.profiler
    }

    /// The database pool.
    pub fn database(&self) -> &Database {
        &self.inner.database
    }

    /// The Redis pool, when Redis is configured: a Redis Cluster when the config has
    /// cluster URLs ([`RedisPool::nodes`] lists its nodes), else a single server.
    pub fn redis(&self) -> Option<&RedisPool> {
        self.inner.redis.as_ref()
    }

    /// The admission limiter.
    pub fn limiter(&self) -> &Limiter {
        &self.inner.limiter
    }

    /// The shared cache (memory, or two tiers with Redis) behind single-flight cached
    /// calls; `cache().cache().inner()` is the store itself.
    pub fn cache(&self) -> &Arc<CachedCalls<CortexCache>> {
        &self.inner.cache
    }

    /// The in-process priority queue.
    pub fn tasks(&self) -> &PriorityQueue {
        &self.inner.tasks
    }

    /// The durable queue, when Redis is configured.
    pub fn durable(&self) -> Option<&DurableQueue> {
        self.inner.durable.as_ref()
    }

    /// The MCP client of `service` if it was started (its endpoint variable was set).
    pub fn mcp_client(&self, service: &str) -> Option<&McpClient> {
        self.inner
            .mcp_clients
            .iter()
            .find(|c| c.service() == service)
    }

    /// Every MCP client started.
    pub fn mcp_clients(&self) -> &[McpClient] {
        &self.inner.mcp_clients
    }

    /// Stop `task` at shutdown, before anything it may use is closed (a cache warmer, a
    /// periodic job of the service).
    pub fn track_background(&self, task: JoinHandle<()>) {
        lock(&self.inner.background).push(task);
    }

    /// Run `close` at shutdown, before the queues drain (e.g. `Batcher::close`, so
    /// pending loads fail fast instead of waiting on a closing pool).
    pub fn on_shutdown(&self, name: impl Into<String>, close: impl FnOnce() + Send + 'static) {
        lock(&self.inner.closers).push((name.into(), Box::new(close)));
    }

    /// Stop everything in reverse order of start, within `deadline` overall: periodic
    /// tasks, batchers (and other closers), the in-process queue (drained until the
    /// deadline, the rest cancelled), the durable worker (unfinished tasks go back to
    /// Redis for another worker), the MCP clients, then the pools.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let start = Instant::now();
        let left = || deadline.saturating_sub(start.elapsed());
        let mut report = ShutdownReport::default();

        for task in lock(&self.inner.background).drain(..) {
            task.abort();
        }
        self.inner.profiler.stop();
        let closers: Vec<_> = lock(&self.inner.closers).drain(..).collect();
        for (name, close) in closers {
            close();
            report.closed.push(name);
        }

        let tasks = self.inner.tasks.shutdown(left()).await;
        report.tasks_drained = tasks.drained;
        report.tasks_not_started = tasks.not_started.iter().map(ToString::to_string).collect();
        report.tasks_aborted = tasks.aborted.iter().map(ToString::to_string).collect();

        let worker = lock(&self.inner.worker).take();
        if let Some(worker) = worker {
            let durable = worker.shutdown(left()).await;
            report
                .durable_aborted
                .extend(durable.aborted.iter().map(ToString::to_string));
        }

        self.inner.mcp.close_all(left()).await;

        let database = &self.inner.database;
        if tokio::time::timeout(left(), database.close())
            .await
            .is_err()
        {
            report
                .unfinished
                .push("database pool: connections still in use".into());
        }
        report.elapsed = start.elapsed();
        report
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What [`Cortex::shutdown`] did, and what it could not finish.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Closers run (see [`Cortex::on_shutdown`]), in order.
    pub closed: Vec<String>,
    /// In-process tasks that finished while the queue drained.
    pub tasks_drained: u64,
    /// In-process tasks cancelled before they started (ids).
    pub tasks_not_started: Vec<String>,
    /// In-process tasks cancelled while running (ids).
    pub tasks_aborted: Vec<String>,
    /// Durable tasks cut short; they stay in Redis and another worker runs them.
    pub durable_aborted: Vec<String>,
    /// Parts that did not close within the deadline.
    pub unfinished: Vec<String>,
    /// How long the shutdown took.
    #[serde(with = "cortex_support::duration::secs")]
    pub elapsed: Duration,
}

impl ShutdownReport {
    /// `true` when every accepted task ran and every part closed in time.
    pub fn is_complete(&self) -> bool {
        self.tasks_not_started.is_empty()
            && self.tasks_aborted.is_empty()
            && self.durable_aborted.is_empty()
            && self.unfinished.is_empty()
    }
}
