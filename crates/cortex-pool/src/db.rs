use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use sqlx::pool::{PoolConnection, PoolOptions};
use sqlx::{ConnectOptions, Database};

use crate::replica::ReplicaSet;
use crate::status::Waiting;
use crate::{DbConfig, Error, PoolMetrics, PoolStatus, ReplicaStatus, Result};
use cortex_support::redact::redact_url;

/// The connect options of a database.
pub(crate) type ConnectOpts<DB> = <<DB as Database>::Connection as sqlx::Connection>::Options;

/// Slow statements are logged at WARN even when `echo` is off.
const SLOW_STATEMENT: Duration = Duration::from_secs(1);

/// A database pool (PostgreSQL or SQLite) over sqlx that shows what it is doing: a
/// [`PoolStatus`] from [`stats`](Self::stats), acquire-wait and hold-time histograms, timeouts and connections
/// created, in cortex-metrics.
///
/// Run queries on [`inner()`](Self::inner) (any sqlx executor) or on a connection from
/// [`acquire()`](Self::acquire), which is timed. With PostgreSQL read replicas
/// (`DB_REPLICA_URLS`), [`acquire_read()`](Self::acquire_read) lends a connection to a
/// healthy replica, falling back to the primary; see the crate's "Read replicas"
/// section.
///
/// ```
/// use cortex_pool::{DbConfig, DbPool};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Embedded SQLite: nothing to install.
/// let pool = DbPool::sqlite(DbConfig::default()).await?;
/// let mut conn = pool.acquire().await?;
/// let one: i64 = sqlx::query_scalar("SELECT 1").fetch_one(&mut **conn).await?;
/// assert_eq!(one, 1);
/// # Ok(())
/// # }
/// ```
pub struct DbPool<DB: Database> {
    shared: Arc<Shared<DB>>,
}

/// What clones of the pool and its connections share; the level gauges hold a `Weak`
/// of it, so they read `NaN` once the last clone and connection are gone.
pub(crate) struct Shared<DB: Database> {
    pool: sqlx::Pool<DB>,
    config: DbConfig,
    metrics: PoolMetrics,
    waiting: AtomicUsize,
    /// The read replicas of a primary (PostgreSQL with `DB_REPLICA_URLS` only).
    replicas: Option<Arc<ReplicaSet<DB>>>,
    /// The name of this pool when it is itself one of those replicas (`db-replica-0`).
    replica_name: Option<String>,
}

impl<DB: Database> Clone for DbPool<DB> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<DB: Database> std::fmt::Debug for DbPool<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbPool")
            .field("url", &redact_url(&self.shared.config.url))
            .field("stats", &self.stats())
            .finish()
    }
}

/// sqlx pool options from a config: each pool knob mapped to what sqlx really does.
pub(crate) fn pool_options<DB: Database>(
    config: &DbConfig,
    metrics: &PoolMetrics,
) -> PoolOptions<DB> {
    let created = metrics.clone();
    let recycle = config.pool_recycle;
    PoolOptions::<DB>::new()
        // pool_size: connections kept warm; pool_size + max_overflow: the ceiling.
        .min_connections(config.pool_size.min(config.max_connections()))
        .max_connections(config.max_connections())
        .acquire_timeout(config.pool_timeout)
        // pool_recycle: replace connections older than this.
        .max_lifetime(config.pool_recycle)
        .idle_timeout(config.idle_timeout)
        // pre_ping: a connection the server dropped is replaced, never handed out.
        .test_before_acquire(config.pre_ping)
        // sqlx enforces max_lifetime on release and in a periodic sweep; an idle
        // connection that aged past it in between is refused here, so recycle is exact.
        .before_acquire(move |_, meta| {
            let fresh = meta.age < recycle;
            Box::pin(async move { Ok(fresh) })
        })
        .after_connect(move |_, _| {
            created.created();
            Box::pin(async { Ok(()) })
        })
}

pub(crate) fn logging<O: ConnectOptions>(options: O, config: &DbConfig) -> O {
    let level = if config.echo {
        log::LevelFilter::Info
    } else {
        log::LevelFilter::Debug
    };
    options
        .log_statements(level)
        .log_slow_statements(log::LevelFilter::Warn, SLOW_STATEMENT)
}

#[cfg(feature = "postgres")]
impl DbPool<sqlx::Postgres> {
    /// Connect to PostgreSQL at `config.url`, recording into the global metrics registry
    /// under the pool name `db`.
    ///
    /// Every new connection gets the session settings of the config (`TimeZone`,
    /// `statement_timeout`, `work_mem`, `maintenance_work_mem`, `synchronous_commit`,
    /// `application_name`) as connection parameters: validated, and never formatted
    /// into SQL.
    ///
    /// With `replica_urls` it also opens one pool per read replica (lazily: a replica
    /// that is down does not fail this call, it starts out of rotation) and a
    /// background check of each replica's health and lag, see
    /// [`acquire_read`](Self::acquire_read). The first check of every replica is
    /// awaited here (bounded by the larger of `replica_check_interval` and 1 s), so
    /// reads use healthy replicas from the start.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad config; [`Error::Database`] when the server
    /// cannot be reached or refuses a setting.
    pub async fn postgres(config: DbConfig) -> Result<Self> {
        let metrics = PoolMetrics::new(cortex_metrics::global(), "db");
        Self::postgres_with(config, metrics).await
    }

    /// As [`postgres`](Self::postgres), recording into `metrics`.
    ///
    /// With `replica_urls`, the replicas record into the same registry as
    /// `<name>-replica-0`, `<name>-replica-1`, ... (nothing when `metrics` is
    /// [`disabled`](PoolMetrics::disabled)).
    ///
    /// # Errors
    /// As [`postgres`](Self::postgres).
    pub async fn postgres_with(config: DbConfig, metrics: PoolMetrics) -> Result<Self> {
        let scope = metrics.scope().map(|(r, n)| (r.clone(), n.to_owned()));
        let replica_registry = scope.as_ref().map(|(r, n)| (r, n.as_str()));
        Self::postgres_replicated(config, metrics, replica_registry).await
    }

    /// As [`postgres`](Self::postgres), recording the primary as pool `name` into
    /// `registry`, and each read replica as `<name>-replica-<i>` (with its
    /// `pool.replica_lag_seconds` and `pool.replica_up` gauges) into the same registry.
    ///
    /// # Errors
    /// As [`postgres`](Self::postgres).
    pub async fn postgres_in(
        config: DbConfig,
        registry: &cortex_metrics::Metrics,
        name: &str,
    ) -> Result<Self> {
        let metrics = PoolMetrics::new(registry, name);
        Self::postgres_replicated(config, metrics, Some((registry, name))).await
    }

    /// Connect the primary, then the replicas (lazily: a replica that is down never
    /// fails the pool) and their health checker.
    async fn postgres_replicated(
        config: DbConfig,
        metrics: PoolMetrics,
        replica_registry: Option<(&cortex_metrics::Metrics, &str)>,
    ) -> Result<Self> {
        if !config.is_postgres() {
            return Err(Error::InvalidConfig {
                key: "DATABASE_URL",
                value: redact_url(&config.url),
                reason: "not a postgres:// URL".into(),
            });
        }
        let pool = Self::open(&config, "DATABASE_URL", &metrics, pg_configure).await?;
        let replicas = if config.replica_urls.is_empty() {
            None
        } else {
            Some(crate::replica::start(&config, replica_registry).await?)
        };
        Ok(Self::wrap(pool, config, metrics, replicas, None))
    }
}

/// The PostgreSQL connect options of `config`: the session settings as connection
/// parameters (validated by [`DbConfig::validate`], never formatted into SQL).
#[cfg(feature = "postgres")]
pub(crate) fn pg_configure(
    options: sqlx::postgres::PgConnectOptions,
    config: &DbConfig,
) -> Result<sqlx::postgres::PgConnectOptions> {
    // The URL was checked by `validate`; sqlx also takes the mode from
    // PGSSLMODE, so the parsed mode is checked too.
    if !cfg!(feature = "tls") {
        use sqlx::postgres::PgSslMode;
        let mode = options.get_ssl_mode();
        if matches!(
            mode,
            PgSslMode::Require | PgSslMode::VerifyCa | PgSslMode::VerifyFull
        ) {
            return Err(Error::InvalidConfig {
                key: "PGSSLMODE",
                value: format!("{mode:?}"),
                reason: "this sslmode needs TLS: enable the `tls` feature of cortex-pool".into(),
            });
        }
    }
    let statement_timeout_ms = config.statement_timeout.as_millis().to_string();
    let mut settings: Vec<(&str, &str)> = vec![
        ("TimeZone", &config.timezone),
        ("statement_timeout", &statement_timeout_ms),
        ("work_mem", &config.work_mem),
        ("maintenance_work_mem", &config.maintenance_work_mem),
    ];
    if config.async_commit {
        settings.push(("synchronous_commit", "off"));
    }
    Ok(options
        .application_name(&config.application_name)
        .statement_cache_capacity(config.statement_cache_size)
        .options(settings))
}

#[cfg(feature = "sqlite")]
impl DbPool<sqlx::Sqlite> {
    /// Open the SQLite database at `config.url` (`sqlite::memory:` by default: an
    /// in-memory database shared by the pool's connections), recording into the global
    /// metrics registry under the pool name `db`. The PostgreSQL session settings do
    /// not apply; WAL journaling and foreign keys are on, and a busy connection waits up
    /// to `statement_timeout` for a lock.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad config; [`Error::Database`] when the file
    /// cannot be opened.
    pub async fn sqlite(config: DbConfig) -> Result<Self> {
        let metrics = PoolMetrics::new(cortex_metrics::global(), "db");
        Self::sqlite_with(config, metrics).await
    }

    /// As [`sqlite`](Self::sqlite), recording into `metrics`.
    ///
    /// # Errors
    /// As [`sqlite`](Self::sqlite).
    pub async fn sqlite_with(config: DbConfig, metrics: PoolMetrics) -> Result<Self> {
        use sqlx::sqlite::SqliteJournalMode;

        let pool = Self::open(&config, "DATABASE_URL", &metrics, |options, config| {
            Ok(options
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .foreign_keys(true)
                .busy_timeout(config.statement_timeout)
                .statement_cache_capacity(config.statement_cache_size))
        })
        .await?;
        Ok(Self::wrap(pool, config, metrics, None, None))
    }
}

impl<DB: Database> DbPool<DB> {
    /// Validate, parse the URL, let the backend add its options, connect.
    async fn open(
        config: &DbConfig,
        key: &'static str,
        metrics: &PoolMetrics,
        configure: impl FnOnce(ConnectOpts<DB>, &DbConfig) -> Result<ConnectOpts<DB>>,
    ) -> Result<sqlx::Pool<DB>> {
        config.validate()?;
        let options = connect_options::<DB>(config, key, configure)?;
        Ok(pool_options(config, metrics).connect_with(options).await?)
    }

    /// The pool around a sqlx pool, its level gauges registered (only now, so a pool
    /// that failed to connect never takes over a live pool's series).
    pub(crate) fn wrap(
        pool: sqlx::Pool<DB>,
        config: DbConfig,
        metrics: PoolMetrics,
        replicas: Option<Arc<ReplicaSet<DB>>>,
        replica_name: Option<String>,
    ) -> Self {
        let shared = Arc::new(Shared {
            pool,
            config,
            metrics,
            waiting: AtomicUsize::new(0),
            replicas,
            replica_name,
        });
        shared.metrics.register_levels(&shared, Shared::status);
        Self { shared }
    }

    /// The sqlx pool, to run queries on directly (`query.fetch_one(pool.inner())`).
    pub fn inner(&self) -> &sqlx::Pool<DB> {
        &self.shared.pool
    }

    /// The config in force.
    pub fn config(&self) -> &DbConfig {
        &self.shared.config
    }

    /// A connection, waiting at most `pool_timeout`. The wait and, when the connection
    /// is dropped, the hold time are recorded; a hold past `leak_threshold` logs a
    /// warning naming this call's location.
    ///
    /// # Errors
    /// [`Error::Timeout`] when no connection became free in time; [`Error::Closed`]
    /// after [`close`](Self::close); [`Error::Database`] when a new connection fails.
    #[track_caller]
    pub fn acquire(&self) -> impl Future<Output = Result<DbConn<DB>>> + Send + '_ {
        let at = std::panic::Location::caller();
        crate::span::acquire("db", self.acquire_at(at))
    }

    /// A connection for reads: from a healthy read replica when the pool has any
    /// (`DB_REPLICA_URLS`, PostgreSQL only), taken in turn (round robin), otherwise from
    /// the primary. A replica is healthy when its last check answered and its replay
    /// lag was within `DB_REPLICA_MAX_LAG`; one whose connection fails here is skipped
    /// (and taken out until its next good check), so replicas being down is never an
    /// error by itself: the primary serves the read. Use it only for reads that may be
    /// slightly stale; writes and transactions go through [`acquire`](Self::acquire),
    /// and a caller that must see its own writes uses a
    /// [`Session`](crate::Session). Recorded in a `pool.acquire` span with
    /// `pool = "db-read"`; each replica's waits and holds record under its own pool
    /// name. [`DbConn::replica`] tells which server answered.
    ///
    /// ```
    /// use cortex_pool::{DbConfig, DbPool};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // Without replicas (and always with SQLite) reads go to the primary.
    /// let pool = DbPool::sqlite(DbConfig::default()).await?;
    /// let mut conn = pool.acquire_read().await?;
    /// assert_eq!(conn.replica(), None);
    /// let one: i64 = sqlx::query_scalar("SELECT 1").fetch_one(&mut **conn).await?;
    /// assert_eq!(one, 1);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// Only the primary's, as for [`acquire`](Self::acquire).
    #[track_caller]
    pub fn acquire_read(&self) -> impl Future<Output = Result<DbConn<DB>>> + Send + '_ {
        let at = std::panic::Location::caller();
        crate::span::acquire("db-read", async move {
            if let Some(set) = &self.shared.replicas {
                for i in set.order() {
                    if let Some(conn) = set.try_acquire(i, at).await {
                        return Ok(conn);
                    }
                }
            }
            self.acquire_at(at).await
        })
    }

    /// The health, lag and pool levels of each read replica, in `DB_REPLICA_URLS`
    /// order (empty without replicas).
    pub fn replicas(&self) -> Vec<ReplicaStatus> {
        self.shared
            .replicas
            .as_ref()
            .map_or_else(Vec::new, |set| set.status())
    }

    #[cfg(feature = "postgres")]
    pub(crate) fn replica_set(&self) -> Option<&Arc<ReplicaSet<DB>>> {
        self.shared.replicas.as_ref()
    }

    /// [`acquire`](Self::acquire) without the span, recording `at` as the caller.
    pub(crate) async fn acquire_at(
        &self,
        at: &'static std::panic::Location<'static>,
    ) -> Result<DbConn<DB>> {
        {
            {
                let start = Instant::now();
                let waiting = Waiting::enter(&self.shared.waiting);
                let got = self.shared.pool.acquire().await;
                drop(waiting);
                let waited = start.elapsed();
                self.shared.metrics.acquire_wait(waited);
                match got {
                    Ok(conn) => Ok(DbConn {
                        conn,
                        acquired: Instant::now(),
                        at,
                        shared: self.shared.clone(),
                    }),
                    Err(sqlx::Error::PoolTimedOut) => {
                        self.shared.metrics.timeout();
                        Err(Error::Timeout {
                            waited,
                            max: self.shared.config.max_connections() as usize,
                        })
                    }
                    Err(sqlx::Error::PoolClosed) => Err(Error::Closed),
                    Err(e) => Err(Error::Database(e)),
                }
            }
        }
    }

    /// Run `fut` bounded by the config's `command_timeout`, for work the server cannot
    /// time out by itself.
    ///
    /// # Errors
    /// [`Error::CommandTimeout`] when the bound runs out (`fut` is dropped); otherwise
    /// `fut`'s own error.
    pub async fn bounded<T, E>(
        &self,
        fut: impl Future<Output = std::result::Result<T, E>>,
    ) -> Result<T>
    where
        E: Into<Error>,
    {
        let limit = self.shared.config.command_timeout;
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => r.map_err(Into::into),
            Err(_) => Err(Error::CommandTimeout { waited: limit }),
        }
    }

    /// What the pool is doing now (a plain serde struct). `waiting` counts callers
    /// inside [`acquire`](Self::acquire).
    pub fn stats(&self) -> PoolStatus {
        self.shared.status()
    }

    /// Close every connection (the replicas' too, and stop their checks); waiters and
    /// later acquires get [`Error::Closed`].
    pub async fn close(&self) {
        if let Some(set) = &self.shared.replicas {
            set.close().await;
        }
        self.shared.pool.close().await;
    }
}

/// Parse `config.url` (the variable `key` names it in errors), let the backend add its
/// options, and the logging.
pub(crate) fn connect_options<DB: Database>(
    config: &DbConfig,
    key: &'static str,
    configure: impl FnOnce(ConnectOpts<DB>, &DbConfig) -> Result<ConnectOpts<DB>>,
) -> Result<ConnectOpts<DB>> {
    let options: ConnectOpts<DB> =
        config
            .url
            .parse()
            .map_err(|e: sqlx::Error| Error::InvalidConfig {
                key,
                value: redact_url(&config.url),
                reason: e.to_string(),
            })?;
    Ok(logging(configure(options, config)?, config))
}

impl<DB: Database> Shared<DB> {
    /// The pool's levels: atomic reads in sqlx, cheap enough for every scrape.
    fn status(&self) -> PoolStatus {
        let size = self.pool.size() as usize;
        // Read apart from `size`, so clamped: in use never goes negative.
        let idle = self.pool.num_idle().min(size);
        PoolStatus {
            size,
            idle,
            in_use: size - idle,
            max: self.config.max_connections() as usize,
            waiting: self.waiting.load(Relaxed),
        }
    }
}

/// A pooled connection; returns to the pool on drop, recording how long it was held.
/// Dereferences to sqlx's [`PoolConnection`] (use `&mut **conn` as an executor).
pub struct DbConn<DB: Database> {
    conn: PoolConnection<DB>,
    acquired: Instant,
    at: &'static std::panic::Location<'static>,
    shared: Arc<Shared<DB>>,
}

impl<DB: Database> DbConn<DB> {
    /// The name of the read replica this connection goes to (`db-replica-0`), or
    /// `None` for the primary.
    pub fn replica(&self) -> Option<&str> {
        self.shared.replica_name.as_deref()
    }
}

impl<DB: Database> std::fmt::Debug for DbConn<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbConn")
            .field("replica", &self.replica())
            .field("held", &self.acquired.elapsed())
            .field("acquired_at", &self.at)
            .finish_non_exhaustive()
    }
}

impl<DB: Database> Deref for DbConn<DB> {
    type Target = PoolConnection<DB>;
    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl<DB: Database> DerefMut for DbConn<DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conn
    }
}

impl<DB: Database> Drop for DbConn<DB> {
    fn drop(&mut self) {
        let s = &self.shared;
        s.metrics.release(
            "database connection",
            self.acquired.elapsed(),
            s.config.leak_threshold,
            self.at,
        );
    }
}
