use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bb8::{PooledConnection, RunError};
use bb8_redis::RedisConnectionManager;
use redis::RedisError;
use redis::cluster::ClusterClient;

use crate::redis_cluster::{
    RedisConnection, RedisManagedConnection, RedisNode, parse_cluster_nodes, split_address,
};
use crate::status::Waiting;
use crate::{Error, NodeRole, PoolMetrics, PoolStatus, RedisConfig, Result};
use cortex_support::redact::redact_url;

/// A Redis pool over bb8 + bb8-redis that shows what it is doing: a [`PoolStatus`] from
/// [`stats`](Self::stats), acquire-wait and hold-time histograms, timeouts, connections created and closed.
///
/// Every connection is named with `CLIENT SETNAME` (`client_name` in the config), so
/// `CLIENT LIST` shows whose it is.
///
/// ```no_run
/// use cortex_pool::{RedisConfig, RedisPool};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = RedisPool::new(RedisConfig::from_env()?).await?;
/// let mut conn = pool.acquire().await?;
/// let pong: String = redis::cmd("PING").query_async(&mut *conn).await?;
/// assert_eq!(pong, "PONG");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisPool {
    shared: Arc<Shared>,
}

/// What clones of the pool and its connections share; the level gauges hold a `Weak`
/// of it, so they read `NaN` once the last clone and connection are gone.
struct Shared {
    pool: bb8::Pool<Manager>,
    config: RedisConfig,
    client: redis::Client,
    metrics: PoolMetrics,
    waiting: AtomicUsize,
    /// In cluster mode, the cluster client (`client` is then the first seed's).
    cluster: Option<ClusterClient>,
    /// The nodes as last sampled in the background (cluster mode with metrics).
    last_nodes: Mutex<Vec<RedisNode>>,
}

impl std::fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let config = &self.shared.config;
        let mut d = f.debug_struct("RedisPool");
        if config.is_cluster() {
            d.field("cluster", &config.redacted_seeds());
        } else {
            d.field("url", &redact_url(&config.url));
        }
        d.field("stats", &self.stats()).finish()
    }
}

/// bb8-redis's manager, plus what the pool needs on top: each new connection is named
/// and counted, and connections older than `pool_recycle` are retired (checked on
/// check-out when `pre_ping` is on, and on return).
///
/// In cluster mode a pooled connection is a multiplexed `ClusterConnection` (one
/// connection to each node, routed by slot), so a few serve many callers.
struct Manager {
    kind: ManagerKind,
    name: String,
    recycle: Duration,
    metrics: PoolMetrics,
}

enum ManagerKind {
    Single(Box<RedisConnectionManager>),
    Cluster {
        /// Boxed: it is much larger than the single-server manager.
        client: Box<ClusterClient>,
    },
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("cluster", &matches!(self.kind, ManagerKind::Cluster { .. }))
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A connection and when it was made.
#[derive(Debug)]
struct Conn {
    conn: RedisConnection,
    created: Instant,
}

impl bb8::ManageConnection for Manager {
    type Connection = Conn;
    type Error = RedisError;

    async fn connect(&self) -> Result<Conn, RedisError> {
        let conn = match &self.kind {
            ManagerKind::Single(inner) => {
                let mut conn = inner.connect().await?;
                redis::cmd("CLIENT")
                    .arg("SETNAME")
                    .arg(&self.name)
                    .query_async::<()>(&mut conn)
                    .await?;
                RedisConnection::single(conn)
            }
            // No CLIENT SETNAME: the cluster client opens node connections on its own
            // as the topology changes, and a name sent now would miss those.
            ManagerKind::Cluster { client } => {
                RedisConnection::cluster(client.get_async_connection().await?)
            }
        };
        self.metrics.created();
        Ok(Conn {
            conn,
            created: Instant::now(),
        })
    }

    async fn is_valid(&self, conn: &mut Conn) -> Result<(), RedisError> {
        if conn.created.elapsed() >= self.recycle {
            return Err((redis::ErrorKind::Io, "connection older than pool_recycle").into());
        }
        match (&self.kind, conn.conn.as_single_mut()) {
            (ManagerKind::Single(inner), Some(single)) => inner.is_valid(single).await,
            _ => redis::cmd("PING").query_async(&mut conn.conn).await,
        }
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        let old = conn.created.elapsed() >= self.recycle;
        if old {
            self.metrics.closed();
        }
        old
    }
}

impl RedisConfig {
    /// The Redis client for [`url`](Self::url): the one place Cortex turns a Redis URL
    /// into a client, for the pool and for components that need connections of their
    /// own ([`RedisPool::client`]).
    ///
    /// A `rediss://` URL connects over TLS (the `tls` feature: rustls with ring),
    /// verifying the server against the system's roots, or against
    /// [`tls_ca_file`](Self::tls_ca_file) when set.
    ///
    /// rustls note: redis-rs builds its TLS config with rustls's process-wide
    /// `CryptoProvider` and has no way to be handed one. This crate installs none; with
    /// only rustls's `ring` feature in the build (what the `tls` feature enables), rustls
    /// picks ring itself on first use. An application whose build also turns on rustls's
    /// `aws-lc-rs` must install a provider (`CryptoProvider::install_default`) before
    /// the first `rediss://` connection.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming `REDIS_URL` (redacted) when the URL is not one
    /// Redis accepts or asks for TLS without the `tls` feature, or naming
    /// `REDIS_TLS_CA_FILE` when that file cannot be read or holds no PEM certificate.
    pub fn client(&self) -> Result<redis::Client> {
        self.validate()?;
        let bad_url = |e: RedisError| Error::InvalidConfig {
            key: "REDIS_URL",
            value: redact_url(&self.url),
            reason: e.to_string(),
        };
        match &self.tls_ca_file {
            #[cfg(feature = "tls")]
            Some(path) => {
                let root_cert = read_ca_file(path)?;
                redis::Client::build_with_tls(
                    self.url.as_str(),
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(root_cert),
                    },
                )
                .map_err(bad_url)
            }
            // `validate` already refuses this (a CA file needs rediss://, which needs the
            // `tls` feature); kept as an error rather than a panic.
            #[cfg(not(feature = "tls"))]
            Some(path) => Err(Error::InvalidConfig {
                key: "REDIS_TLS_CA_FILE",
                value: path.display().to_string(),
                reason: "a CA file needs the `tls` feature of cortex-pool".to_owned(),
            }),
            None => redis::Client::open(self.url.as_str()).map_err(bad_url),
        }
    }
}

/// The PEM bytes of a CA file, checked to hold at least one certificate, so a wrong
/// path or file is a config error naming the variable, not a failed handshake later.
#[cfg(feature = "tls")]
pub(crate) fn read_ca_file(path: &std::path::Path) -> Result<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let bad = |reason: String| Error::InvalidConfig {
        key: "REDIS_TLS_CA_FILE",
        value: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let mut certs = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
        certs += 1;
    }
    if certs == 0 {
        return Err(bad("holds no PEM certificate".to_owned()));
    }
    Ok(pem)
}

impl RedisPool {
    /// Connect to `config.url`, or to the Redis Cluster of `config.cluster_urls` when
    /// that is set, recording into the global metrics registry under the pool name
    /// `redis`. One connection is made before this returns, so a wrong URL fails here
    /// rather than on first use.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad config or URL; [`Error::Redis`] when the server
    /// cannot be reached.
    pub async fn new(config: RedisConfig) -> Result<Self> {
        let metrics = PoolMetrics::new(cortex_metrics::global(), "redis");
        Self::with_metrics(config, metrics).await
    }

    /// As [`new`](Self::new), recording into `metrics`. In cluster mode this also
    /// keeps the gauge `pool.redis_node_up{pool,node}` (1 up, 0 down, exported as
    /// `cortex_pool_redis_node_up`) per node in the registry of `metrics`, sampled with
    /// `CLUSTER NODES` in the background every [`NODE_SAMPLE_INTERVAL`] (so a scrape
    /// never waits on Redis); it reads `NaN` once the pool is dropped.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub async fn with_metrics(config: RedisConfig, metrics: PoolMetrics) -> Result<Self> {
        config.validate()?;
        let start = Instant::now();
        let max = config.pool_size as usize;
        let timeout = move || Error::Timeout {
            waited: start.elapsed(),
            max,
        };
        let (kind, client, cluster) = if config.is_cluster() {
            let cluster = config.cluster_client()?;
            // The first seed that answers, within pool_timeout: `client()` and the
            // cache's invalidation listener start from it.
            let mut last = None;
            let mut found = None;
            for url in &config.cluster_urls {
                let single = RedisConfig {
                    url: url.clone(),
                    cluster_urls: Vec::new(),
                    ..config.clone()
                };
                let client = single.client()?;
                let left = config.pool_timeout.saturating_sub(start.elapsed());
                match tokio::time::timeout(left, client.get_multiplexed_async_connection()).await {
                    Ok(Ok(_)) => {
                        found = Some(client);
                        break;
                    }
                    Ok(Err(e)) => last = Some(Error::Redis(e)),
                    Err(_) => {
                        last = Some(timeout());
                        break;
                    }
                }
            }
            let Some(client) = found else {
                return Err(last.unwrap_or_else(timeout));
            };
            let kind = ManagerKind::Cluster {
                client: Box::new(cluster.clone()),
            };
            (kind, client, Some(cluster))
        } else {
            let client = config.client()?;
            let manager = RedisConnectionManager::new(client.get_connection_info().clone())
                .map_err(|e| Error::InvalidConfig {
                    key: "REDIS_URL",
                    value: redact_url(&config.url),
                    reason: e.to_string(),
                })?;
            (ManagerKind::Single(Box::new(manager)), client, None)
        };
        let pool = bb8::Pool::builder()
            .max_size(config.pool_size)
            .connection_timeout(config.pool_timeout)
            .max_lifetime(config.pool_recycle)
            .idle_timeout(config.idle_timeout)
            .test_on_check_out(config.pre_ping)
            .retry_connection(false)
            .build_unchecked(Manager {
                kind,
                name: config.client_name.clone(),
                recycle: config.pool_recycle,
                metrics: metrics.clone(),
            });
        let this = Self {
            shared: Arc::new(Shared {
                pool,
                config,
                client,
                metrics,
                waiting: AtomicUsize::new(0),
                cluster,
                last_nodes: Mutex::new(Vec::new()),
            }),
        };
        // Fail fast on an unreachable or untrusted server instead of on the first
        // request. bb8 hands connect errors to its error sink, never to a waiter (who
        // would see only a timeout), so the first connection is made here, where its
        // error can be returned, and then given to the pool.
        let left = this
            .shared
            .config
            .pool_timeout
            .saturating_sub(start.elapsed());
        let first = tokio::time::timeout(left, this.shared.pool.dedicated_connection()).await;
        match first {
            Ok(Ok(conn)) => {
                // Refused only when the pool is full, which a new pool is not.
                let _ = this.shared.pool.add(conn);
            }
            Ok(Err(e)) => return Err(Error::Redis(e)),
            Err(_) => return Err(timeout()),
        }
        // Registered only now, so a pool that failed to connect never takes over a
        // live pool's series.
        this.shared
            .metrics
            .register_levels(&this.shared, Shared::status);
        if this.is_cluster()
            && let Some((registry, name)) = this.shared.metrics.scope()
        {
            spawn_node_sampler(
                Arc::downgrade(&this.shared),
                registry.clone(),
                name.to_owned(),
            );
        }
        Ok(this)
    }

    /// The Redis client this pool connects with, for connections a pool cannot lend: a
    /// multiplexed `ConnectionManager` shared by many callers, or a connection of its own
    /// for blocking commands (`XREADGROUP BLOCK`, `SUBSCRIBE`). It carries the pool's
    /// URL and TLS settings, so every Redis path of an application connects one way.
    ///
    /// In cluster mode this is a client of the one seed node the pool reached first: it
    /// does not route by slot. Cluster-aware code takes
    /// [`cluster_client`](Self::cluster_client) or
    /// [`dedicated_connection`](Self::dedicated_connection) instead.
    pub fn client(&self) -> &redis::Client {
        &self.shared.client
    }

    /// The cluster client, in cluster mode (`None` for a single server).
    pub fn cluster_client(&self) -> Option<&ClusterClient> {
        self.shared.cluster.as_ref()
    }

    /// `true` when this pool talks to a Redis Cluster (`REDIS_CLUSTER_URLS` set).
    pub fn is_cluster(&self) -> bool {
        self.shared.cluster.is_some()
    }

    /// A new connection of this pool's mode that the pool does not lend or count and
    /// that reconnects by itself (see [`RedisManagedConnection`]): for a component that
    /// keeps one for its lifetime. `pool_timeout` bounds the connect (waited for here)
    /// and every response; for blocking commands take
    /// [`dedicated_connection_with`](Self::dedicated_connection_with).
    ///
    /// # Errors
    /// [`Error::Timeout`] when it could not connect in time; [`Error::Redis`] when the
    /// server refuses.
    pub async fn dedicated_connection(&self) -> Result<RedisManagedConnection> {
        self.dedicated_connection_with(self.shared.config.pool_timeout)
            .await
    }

    /// As [`dedicated_connection`](Self::dedicated_connection), waiting at most
    /// `response_timeout` for each answer: for blocking commands (`BLPOP`,
    /// `XREADGROUP BLOCK`), which would hold up every other caller of a shared
    /// multiplexed connection and need longer than `pool_timeout` (give their block
    /// time plus a margin). Connecting is still bounded by `pool_timeout`.
    ///
    /// # Errors
    /// As [`dedicated_connection`](Self::dedicated_connection); [`Error::InvalidConfig`]
    /// for a cluster client that cannot be made.
    pub async fn dedicated_connection_with(
        &self,
        response_timeout: Duration,
    ) -> Result<RedisManagedConnection> {
        let timeout = self.shared.config.pool_timeout;
        let cluster = match &self.shared.cluster {
            Some(_) => Some(self.shared.config.cluster_client_with(response_timeout)?),
            None => None,
        };
        let connect = async {
            match cluster {
                Some(cluster) => cluster
                    .get_async_connection()
                    .await
                    .map(RedisManagedConnection::cluster),
                None => {
                    let cfg = redis::aio::ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(timeout))
                        .set_response_timeout(Some(response_timeout));
                    redis::aio::ConnectionManager::new_with_config(self.shared.client.clone(), cfg)
                        .await
                        .map(RedisManagedConnection::single)
                }
            }
        };
        match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(Error::Redis(e)),
            Err(_) => Err(Error::Timeout {
                waited: timeout,
                max: self.shared.config.pool_size as usize,
            }),
        }
    }

    /// A connection to every master, to run a command that works on one node's keys
    /// only (`SCAN` + `UNLINK`, `DBSIZE`, `FLUSHDB` of a private server) across the
    /// whole data set. For a single server it is that server's connection; on a
    /// cluster, a new plain connection to each master that is up and serves slots,
    /// as `CLUSTER NODES` reports them now (ask again after a failover: roles change).
    /// Each connection waits at most `pool_timeout`.
    ///
    /// ```no_run
    /// use cortex_pool::{RedisConfig, RedisPool};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = RedisPool::new(RedisConfig::from_env()?).await?;
    /// let mut keys = 0;
    /// for mut master in pool.masters().await? {
    ///     keys += redis::cmd("DBSIZE").query_async::<u64>(&mut master).await?;
    /// }
    /// println!("{keys} keys");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire); [`Error::MasterDown`] (retryable) when the cluster
    /// reports a slot range served by no master that is up (a failover under way).
    pub async fn masters(&self) -> Result<Vec<RedisConnection>> {
        if !self.is_cluster() {
            let conn = self.acquire().await?;
            return Ok(vec![RedisConnection::clone(&conn)]);
        }
        let nodes = self.nodes().await?;
        let masters: Vec<&RedisNode> = nodes
            .iter()
            .filter(|n| n.role == NodeRole::Master && n.slots > 0)
            .collect();
        if let Some(down) = masters.iter().find(|n| !n.up) {
            return Err(Error::MasterDown {
                address: down.address.clone(),
                slots: down.slots,
            });
        }
        let mut conns = Vec::with_capacity(masters.len());
        for node in masters {
            conns.push(self.node_connection(&node.address).await?);
        }
        Ok(conns)
    }

    /// A plain connection to the cluster node at `address` (`host:port`), with this
    /// pool's credentials and TLS settings, within `pool_timeout`.
    async fn node_connection(&self, address: &str) -> Result<RedisConnection> {
        let config = &self.shared.config;
        let (host, port) = split_address(address).ok_or_else(|| Error::Backend {
            source: format!("CLUSTER NODES names a node at {address:?}, not host:port").into(),
        })?;
        let client = config.for_node(host, port).client()?;
        let timeout = config.pool_timeout;
        match tokio::time::timeout(timeout, client.get_multiplexed_async_connection()).await {
            Ok(Ok(conn)) => Ok(RedisConnection::single(conn)),
            Ok(Err(e)) => Err(Error::Redis(e)),
            Err(_) => Err(Error::Timeout {
                waited: timeout,
                max: config.pool_size as usize,
            }),
        }
    }

    /// Every node and whether it is up, now: for a cluster what `CLUSTER NODES` of a
    /// node that answers says (masters and replicas, their slots, which fail), for a
    /// single server the server itself (up when it answers `PING`).
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire) (a single server that does not answer is an error
    /// here, not a node marked down).
    pub async fn nodes(&self) -> Result<Vec<RedisNode>> {
        let mut conn = self.acquire().await?;
        if !self.is_cluster() {
            let pong: String = redis::cmd("PING").query_async(&mut *conn).await?;
            return Ok(vec![RedisNode {
                address: redact_url(&self.shared.config.url),
                id: String::new(),
                role: NodeRole::Master,
                up: pong == "PONG",
                master_id: None,
                slots: 16384,
            }]);
        }
        let text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut *conn)
            .await?;
        Ok(parse_cluster_nodes(&text))
    }

    /// The nodes as the background sampler last saw them (cluster mode, with metrics
    /// recorded: the `metrics` feature and a pool not made with
    /// [`PoolMetrics::disabled`]); empty otherwise. Never waits on Redis.
    pub fn last_nodes(&self) -> Vec<RedisNode> {
        self.shared
            .last_nodes
            .lock()
            .map(|n| n.clone())
            .unwrap_or_default()
    }

    /// A connection, waiting at most `pool_timeout`. A hold past `leak_threshold` logs
    /// a warning naming this call's location.
    ///
    /// # Errors
    /// [`Error::Timeout`] when none became free in time; [`Error::Redis`] when a new
    /// connection fails.
    #[track_caller]
    pub fn acquire(&self) -> impl Future<Output = Result<RedisConn>> + Send + '_ {
        let at = std::panic::Location::caller();
        crate::span::acquire("redis", async move {
            let start = Instant::now();
            let waiting = Waiting::enter(&self.shared.waiting);
            let got = self.shared.pool.get_owned().await;
            drop(waiting);
            let waited = start.elapsed();
            self.shared.metrics.acquire_wait(waited);
            match got {
                Ok(conn) => Ok(RedisConn {
                    conn,
                    acquired: Instant::now(),
                    at,
                    shared: self.shared.clone(),
                }),
                Err(RunError::TimedOut) => {
                    self.shared.metrics.timeout();
                    Err(Error::Timeout {
                        waited,
                        max: self.shared.config.pool_size as usize,
                    })
                }
                Err(RunError::User(e)) => Err(Error::Redis(e)),
            }
        })
    }

    /// `PING` on a pooled connection: `Ok` when Redis answers. In cluster mode `Ok`
    /// also needs every slot served: every master that serves slots is up (see
    /// [`nodes`](Self::nodes) for the per-node view).
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire), or the `PING`'s error; [`Error::Backend`] naming
    /// a master that is down.
    pub async fn health(&self) -> Result<()> {
        let mut conn = self.acquire().await?;
        let pong: String = redis::cmd("PING").query_async(&mut *conn).await?;
        if pong != "PONG" {
            return Err(Error::Backend {
                source: format!("unexpected PING answer {pong:?}").into(),
            });
        }
        drop(conn);
        if self.is_cluster()
            && let Some(down) = self
                .nodes()
                .await?
                .into_iter()
                .find(|n| n.role == NodeRole::Master && n.slots > 0 && !n.up)
        {
            return Err(Error::Backend {
                source: format!("master {} ({} slots) is down", down.address, down.slots).into(),
            });
        }
        Ok(())
    }

    /// What the pool is doing now (a plain serde struct).
    pub fn stats(&self) -> PoolStatus {
        self.shared.status()
    }

    /// Connections closed so far (broken, invalid, too old or idle too long), from bb8.
    pub fn closed_connections(&self) -> u64 {
        let s = self.shared.pool.state().statistics;
        s.connections_closed_broken
            + s.connections_closed_invalid
            + s.connections_closed_max_lifetime
            + s.connections_closed_idle_timeout
    }

    /// The config in force.
    pub fn config(&self) -> &RedisConfig {
        &self.shared.config
    }
}

impl Shared {
    /// The pool's levels. bb8 reads them under its internal lock, which it holds only
    /// for short bookkeeping, so this stays quick enough for every scrape.
    fn status(&self) -> PoolStatus {
        let state = self.pool.state();
        let size = state.connections as usize;
        let idle = (state.idle_connections as usize).min(size);
        PoolStatus {
            size,
            idle,
            in_use: size - idle,
            max: self.config.pool_size as usize,
            waiting: self.waiting.load(Relaxed),
        }
    }
}

/// A pooled Redis connection; returns to the pool on drop, recording how long it was
/// held. Dereferences to a [`RedisConnection`] (single server or cluster), which is
/// redis-rs `ConnectionLike`: `cmd.query_async(&mut *conn)`.
pub struct RedisConn {
    conn: PooledConnection<'static, Manager>,
    acquired: Instant,
    at: &'static std::panic::Location<'static>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConn")
            .field("held", &self.acquired.elapsed())
            .field("acquired_at", &self.at)
            .finish_non_exhaustive()
    }
}

impl Deref for RedisConn {
    type Target = RedisConnection;
    fn deref(&self) -> &Self::Target {
        &self.conn.conn
    }
}

impl DerefMut for RedisConn {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conn.conn
    }
}

impl Drop for RedisConn {
    fn drop(&mut self) {
        let s = &self.shared;
        s.metrics.release(
            "redis connection",
            self.acquired.elapsed(),
            s.config.leak_threshold,
            self.at,
        );
    }
}

/// How often the background sampler reads `CLUSTER NODES` for the per-node gauges.
pub const NODE_SAMPLE_INTERVAL: Duration = Duration::from_secs(10);

/// Keep `pool.redis_node_up{pool,node}` current from a task of its own, so a scrape
/// never waits on Redis. Each sample is bounded by `pool_timeout` (through the pool's
/// acquire and the cluster client's response timeout). Ends, setting its gauges to
/// `NaN`, once the pool is gone.
fn spawn_node_sampler(shared: Weak<Shared>, registry: cortex_metrics::Metrics, name: String) {
    tokio::spawn(async move {
        let mut gauges: Vec<(String, Arc<cortex_metrics::Gauge>)> = Vec::new();
        loop {
            let Some(strong) = shared.upgrade() else {
                break;
            };
            let pool = RedisPool { shared: strong };
            let bound = pool.shared.config.pool_timeout.saturating_mul(2);
            if let Ok(Ok(nodes)) = tokio::time::timeout(bound, pool.nodes()).await {
                for node in &nodes {
                    let gauge = match gauges.iter().find(|(a, _)| *a == node.address) {
                        Some((_, g)) => g.clone(),
                        None => match registry.gauge_with(
                            "pool.redis_node_up",
                            &[("pool", name.as_str()), ("node", node.address.as_str())],
                        ) {
                            Ok(g) => {
                                gauges.push((node.address.clone(), g.clone()));
                                g
                            }
                            Err(_) => continue,
                        },
                    };
                    gauge.set(if node.up { 1.0 } else { 0.0 });
                }
                if let Ok(mut last) = pool.shared.last_nodes.lock() {
                    *last = nodes;
                }
            }
            // A failed sample keeps the last values: a cluster that does not answer
            // at all shows in the pool's own timeouts and errors.
            drop(pool);
            tokio::time::sleep(NODE_SAMPLE_INTERVAL).await;
        }
        for (_, g) in gauges {
            g.set(f64::NAN);
        }
    });
}
