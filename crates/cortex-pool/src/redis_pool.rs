use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bb8::{PooledConnection, RunError};
use bb8_redis::RedisConnectionManager;
use redis::RedisError;
use redis::aio::MultiplexedConnection;

use crate::status::Waiting;
use crate::{Error, PoolMetrics, PoolStatus, RedisConfig, Result};
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
}

impl std::fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPool")
            .field("url", &redact_url(&self.shared.config.url))
            .field("stats", &self.stats())
            .finish()
    }
}

/// bb8-redis's manager, plus what the pool needs on top: each new connection is named
/// and counted, and connections older than `pool_recycle` are retired (checked on
/// check-out when `pre_ping` is on, and on return).
#[derive(Debug)]
struct Manager {
    inner: RedisConnectionManager,
    name: String,
    recycle: Duration,
    metrics: PoolMetrics,
}

/// A connection and when it was made.
#[derive(Debug)]
struct Conn {
    conn: MultiplexedConnection,
    created: Instant,
}

impl bb8::ManageConnection for Manager {
    type Connection = Conn;
    type Error = RedisError;

    async fn connect(&self) -> Result<Conn, RedisError> {
        let mut conn = self.inner.connect().await?;
        redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(&self.name)
            .query_async::<()>(&mut conn)
            .await?;
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
        self.inner.is_valid(&mut conn.conn).await
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
fn read_ca_file(path: &std::path::Path) -> Result<Vec<u8>> {
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
    /// Connect to `config.url`, recording into the global metrics registry under the
    /// pool name `redis`. One connection is made before this returns, so a wrong URL
    /// fails here rather than on first use.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad config or URL; [`Error::Redis`] when the server
    /// cannot be reached.
    pub async fn new(config: RedisConfig) -> Result<Self> {
        let metrics = PoolMetrics::new(cortex_metrics::global(), "redis");
        Self::with_metrics(config, metrics).await
    }

    /// As [`new`](Self::new), recording into `metrics`.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub async fn with_metrics(config: RedisConfig, metrics: PoolMetrics) -> Result<Self> {
        config.validate()?;
        let client = config.client()?;
        let manager =
            RedisConnectionManager::new(client.get_connection_info().clone()).map_err(|e| {
                Error::InvalidConfig {
                    key: "REDIS_URL",
                    value: redact_url(&config.url),
                    reason: e.to_string(),
                }
            })?;
        let pool = bb8::Pool::builder()
            .max_size(config.pool_size)
            .connection_timeout(config.pool_timeout)
            .max_lifetime(config.pool_recycle)
            .idle_timeout(config.idle_timeout)
            .test_on_check_out(config.pre_ping)
            .retry_connection(false)
            .build_unchecked(Manager {
                inner: manager,
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
            }),
        };
        // Fail fast on an unreachable or untrusted server instead of on the first
        // request. bb8 hands connect errors to its error sink, never to a waiter (who
        // would see only a timeout), so the first connection is made here, where its
        // error can be returned, and then given to the pool.
        let start = Instant::now();
        let first = tokio::time::timeout(
            this.shared.config.pool_timeout,
            this.shared.pool.dedicated_connection(),
        )
        .await;
        match first {
            Ok(Ok(conn)) => {
                // Refused only when the pool is full, which a new pool is not.
                let _ = this.shared.pool.add(conn);
            }
            Ok(Err(e)) => return Err(Error::Redis(e)),
            Err(_) => {
                return Err(Error::Timeout {
                    waited: start.elapsed(),
                    max: this.shared.config.pool_size as usize,
                });
            }
        }
        // Registered only now, so a pool that failed to connect never takes over a
        // live pool's series.
        this.shared
            .metrics
            .register_levels(&this.shared, Shared::status);
        Ok(this)
    }

    /// The Redis client this pool connects with, for connections a pool cannot lend: a
    /// multiplexed `ConnectionManager` shared by many callers, or a connection of its own
    /// for blocking commands (`XREADGROUP BLOCK`, `SUBSCRIBE`). It carries the pool's
    /// URL and TLS settings, so every Redis path of an application connects one way.
    pub fn client(&self) -> &redis::Client {
        &self.shared.client
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

    /// `PING` on a pooled connection: `Ok` when Redis answers.
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire), or the `PING`'s error.
    pub async fn health(&self) -> Result<()> {
        let mut conn = self.acquire().await?;
        let pong: String = redis::cmd("PING").query_async(&mut *conn).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(Error::Backend {
                source: format!("unexpected PING answer {pong:?}").into(),
            })
        }
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
/// held. Dereferences to redis-rs's `MultiplexedConnection`.
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
    type Target = MultiplexedConnection;
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
