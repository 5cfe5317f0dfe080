//! PostgreSQL read replicas of a [`DbPool`]: one pool per hot standby, a background
//! check of each one's health and replay lag, the routing of
//! [`DbPool::acquire_read`], and [`Session`] for read-your-writes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use serde::Serialize;
use sqlx::Database;

use crate::{DbConn, DbPool, Error, PoolStatus};

/// The health of one read replica, as [`DbPool::replicas`] reports it (a plain serde
/// struct).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ReplicaStatus {
    /// The replica's pool name, its `pool` metrics label: `db-replica-0`, ...
    pub name: String,
    /// Its URL, password redacted.
    pub url: String,
    /// `true` while it takes reads: its last check answered, it is a standby in
    /// recovery, and its lag was within `replica_max_lag`.
    pub up: bool,
    /// The replay lag at the last check, in seconds (`0` when it has replayed all it
    /// received from a streaming primary); `None` when unknown (down, or not measured).
    pub lag_seconds: Option<f64>,
    /// The highest WAL position it is known to have replayed (bytes from `0/0`).
    pub replay_lsn: u64,
    /// Why it is out, when it is.
    pub last_error: Option<String>,
    /// How many times it was taken out of rotation.
    pub times_down: u64,
    /// Its connection pool's levels.
    pub pool: PoolStatus,
}

/// One replica: its pool and what the checks found.
pub(crate) struct Replica<DB: Database> {
    name: String,
    url: String,
    pool: DbPool<DB>,
    up: AtomicBool,
    /// `f64` bits of the last lag in seconds; NaN when unknown.
    lag: AtomicU64,
    replay_lsn: AtomicU64,
    times_down: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Wakes the reads waiting for this replica's connection when it is taken out,
    /// so they move on at once instead of waiting out their bound.
    taken_out: tokio::sync::Notify,
}

impl<DB: Database> Replica<DB> {
    fn lag(&self) -> f64 {
        f64::from_bits(self.lag.load(Relaxed))
    }

    #[cfg(feature = "postgres")]
    fn set_lag(&self, lag: Option<f64>) {
        self.lag.store(lag.unwrap_or(f64::NAN).to_bits(), Relaxed);
    }

    /// Take the replica out of rotation (logged once per change).
    fn mark_down(&self, why: String) {
        if self.up.swap(false, Relaxed) {
            self.times_down.fetch_add(1, Relaxed);
            self.taken_out.notify_waiters();
            tracing::warn!(replica = %self.name, url = %self.url, reason = %why, "read replica out of rotation");
        }
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }

    /// Put the replica back (logged once per change).
    #[cfg(feature = "postgres")]
    fn mark_up(&self) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if !self.up.swap(true, Relaxed) {
            tracing::info!(replica = %self.name, url = %self.url, "read replica in rotation");
        }
    }
}

/// The replicas of one primary.
pub(crate) struct ReplicaSet<DB: Database> {
    replicas: Vec<Replica<DB>>,
    /// Round-robin cursor of `acquire_read`.
    next: AtomicUsize,
    closed: AtomicBool,
    /// Bound of one check, and of a read's wait for a replica's connection.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    check_bound: Duration,
}

impl<DB: Database> ReplicaSet<DB> {
    /// The replicas in rotation, starting from the next one in turn.
    pub(crate) fn order(&self) -> impl Iterator<Item = usize> + '_ {
        let n = self.replicas.len();
        let start = self.next.fetch_add(1, Relaxed);
        (0..n)
            .map(move |k| start.wrapping_add(k) % n)
            .filter(|&i| self.replicas[i].up.load(Relaxed))
    }

    /// A connection to replica `i`, or `None` to read elsewhere. A failure takes the
    /// replica out of rotation until its next good check, unless the pool was merely
    /// full (busy, not broken); a replica taken out (by the checker or another read)
    /// while this waits for its connection gives up at once.
    pub(crate) async fn try_acquire(
        &self,
        i: usize,
        at: &'static std::panic::Location<'static>,
    ) -> Option<DbConn<DB>> {
        use std::task::Poll;
        let r = &self.replicas[i];
        // Registered before the check of `up`, so a take-out in between still wakes it.
        let mut taken_out = std::pin::pin!(r.taken_out.notified());
        if !r.up.load(Relaxed) {
            return None;
        }
        let mut acquire = std::pin::pin!(r.pool.acquire_at(at));
        let got = std::future::poll_fn(|cx| {
            if let Poll::Ready(got) = acquire.as_mut().poll(cx) {
                return Poll::Ready(Some(got));
            }
            if taken_out.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await;
        match got? {
            Ok(conn) => Some(conn),
            Err(e) => {
                let stats = r.pool.stats();
                let busy = matches!(e, Error::Timeout { .. }) && stats.size >= stats.max;
                if busy {
                    tracing::debug!(replica = %r.name, "read replica pool full: reading elsewhere");
                } else {
                    r.mark_down(describe(&e));
                }
                None
            }
        }
    }

    pub(crate) fn status(&self) -> Vec<ReplicaStatus> {
        self.replicas
            .iter()
            .map(|r| {
                let lag = r.lag();
                ReplicaStatus {
                    name: r.name.clone(),
                    url: r.url.clone(),
                    up: r.up.load(Relaxed),
                    lag_seconds: (!lag.is_nan()).then_some(lag),
                    replay_lsn: r.replay_lsn.load(Relaxed),
                    last_error: r
                        .last_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone(),
                    times_down: r.times_down.load(Relaxed),
                    pool: r.pool.stats(),
                }
            })
            .collect()
    }

    pub(crate) async fn close(&self) {
        self.closed.store(true, Relaxed);
        for r in &self.replicas {
            r.up.store(false, Relaxed);
            r.pool.inner().close().await;
        }
    }
}

/// An error and its sources in one line, for logs and [`ReplicaStatus::last_error`].
fn describe(e: &Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(feature = "postgres")]
pub use self::pg::Session;
#[cfg(feature = "postgres")]
pub(crate) use self::pg::start;

#[cfg(feature = "postgres")]
mod pg {
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::{Arc, Mutex, Weak};
    use std::time::Duration;

    use cortex_support::redact::redact_url;
    use sqlx::postgres::{PgConnectOptions, PgConnection};
    use sqlx::{Connection, Postgres};

    use super::{Replica, ReplicaSet, describe};
    use crate::db::{connect_options, pg_configure, pool_options};
    use crate::{DbConfig, DbConn, DbPool, Error, PoolMetrics, Result};

    /// Health and lag in one round trip. Lag is zero when a streaming standby has
    /// replayed everything it received (an idle primary sends no commits, so the last
    /// replayed commit's age would read as a growing lag); otherwise it is the age of
    /// the last replayed commit. NULL when unknown (no commit replayed since start).
    const PROBE: &str = "SELECT pg_is_in_recovery(), \
         CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() \
                   AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming') \
              THEN 0::float8 \
              ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8 END, \
         (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8";

    /// The WAL position a replica has replayed (NULL on a primary).
    const REPLAY_LSN: &str = "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8";

    /// The end of the WAL written so far on the primary: every committed transaction
    /// is before it (the insert position, so it holds even with
    /// `synchronous_commit = off`).
    const WRITE_LSN: &str = "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8";

    /// Open a pool per replica of `config`, register their gauges, start their checks
    /// and wait (bounded) for each replica's first check.
    pub(crate) async fn start(
        config: &DbConfig,
        registry: Option<(&cortex_metrics::Metrics, &str)>,
    ) -> Result<Arc<ReplicaSet<Postgres>>> {
        let check_bound = config.replica_check_interval.max(Duration::from_secs(1));
        let mut replicas = Vec::new();
        let mut options = Vec::new();
        for (i, url) in config.replica_urls.iter().enumerate() {
            let name = format!("{}-replica-{i}", registry.map_or("db", |(_, n)| n));
            let rconfig = DbConfig {
                url: url.clone(),
                pool_size: config.replica_pool_size.unwrap_or(config.pool_size),
                // A read waits this long at most for a replica before the next one or
                // the primary: sqlx retries a refused connect until this deadline.
                pool_timeout: config.pool_timeout.min(check_bound),
                replica_urls: Vec::new(),
                ..config.clone()
            };
            let opts: PgConnectOptions =
                connect_options::<Postgres>(&rconfig, "DB_REPLICA_URLS", pg_configure)?;
            let metrics =
                registry.map_or_else(PoolMetrics::disabled, |(r, _)| PoolMetrics::new(r, &name));
            // Lazy: a replica that is down must not fail the pool.
            let pool = pool_options(&rconfig, &metrics).connect_lazy_with(opts.clone());
            let pool = DbPool::wrap(pool, rconfig, metrics, None, Some(name.clone()));
            replicas.push(Replica {
                name,
                url: redact_url(url),
                pool,
                up: false.into(),
                lag: f64::NAN.to_bits().into(),
                replay_lsn: 0.into(),
                times_down: 0.into(),
                last_error: Mutex::new(Some("not checked yet".into())),
                taken_out: tokio::sync::Notify::new(),
            });
            options.push(opts);
        }
        let set = Arc::new(ReplicaSet {
            replicas,
            next: 0.into(),
            closed: false.into(),
            check_bound,
        });
        if let Some((registry, _)) = registry {
            register_gauges(&set, registry);
        }
        let mut first = Vec::new();
        for (i, opts) in options.into_iter().enumerate() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            first.push(rx);
            tokio::spawn(check_loop(
                Arc::downgrade(&set),
                i,
                opts,
                config.replica_check_interval,
                config.replica_max_lag,
                tx,
            ));
        }
        // The checks run at once and in parallel; each is bounded by `check_bound`.
        let deadline = tokio::time::Instant::now() + check_bound + Duration::from_secs(1);
        for rx in first {
            let _ = tokio::time::timeout_at(deadline, rx).await;
        }
        Ok(set)
    }

    /// `pool.replica_lag_seconds` and `pool.replica_up`, labeled with each replica's
    /// pool name, read at scrape time through a `Weak` (NaN once the pool is gone).
    fn register_gauges(set: &Arc<ReplicaSet<Postgres>>, registry: &cortex_metrics::Metrics) {
        if !cfg!(feature = "metrics") {
            return;
        }
        type Read = fn(&Replica<Postgres>) -> f64;
        let reads: [(&str, Read); 2] = [
            ("pool.replica_lag_seconds", |r| r.lag()),
            ("pool.replica_up", |r| {
                f64::from(u8::from(r.up.load(Relaxed)))
            }),
        ];
        for (i, r) in set.replicas.iter().enumerate() {
            for (what, read) in reads {
                let weak: Weak<ReplicaSet<Postgres>> = Arc::downgrade(set);
                let gauge = move || weak.upgrade().map_or(f64::NAN, |s| read(&s.replicas[i]));
                // `pool` is a valid label name, so this cannot fail; the unlabeled
                // series is the fallback, as for the other pool gauges.
                if registry
                    .gauge_fn(what, &[("pool", &r.name)], gauge.clone())
                    .is_err()
                {
                    let _ = registry.gauge_fn(what, &[], gauge);
                }
            }
        }
    }

    /// What one check found.
    struct Probe {
        in_recovery: bool,
        lag: Option<f64>,
        replay_lsn: Option<i64>,
    }

    /// Check replica `i` every `interval` on a connection of its own (outside its pool,
    /// so a full pool never delays the check), until the set is dropped or closed.
    async fn check_loop(
        set: Weak<ReplicaSet<Postgres>>,
        i: usize,
        options: PgConnectOptions,
        interval: Duration,
        max_lag: Duration,
        first: tokio::sync::oneshot::Sender<()>,
    ) {
        let mut conn: Option<PgConnection> = None;
        let mut first = Some(first);
        loop {
            let Some(set) = set.upgrade() else { break };
            if set.closed.load(Relaxed) {
                break;
            }
            let bound = set.check_bound;
            let got = match tokio::time::timeout(bound, probe(&mut conn, &options)).await {
                Ok(got) => got,
                Err(_) => Err(Error::CommandTimeout { waited: bound }),
            };
            let r = &set.replicas[i];
            match got {
                Ok(p) => {
                    if let Some(lsn) = p.replay_lsn {
                        r.replay_lsn
                            .fetch_max(u64::try_from(lsn).unwrap_or(0), Relaxed);
                    }
                    r.set_lag(p.lag);
                    match p.lag {
                        _ if !p.in_recovery => {
                            r.mark_down("not a standby in recovery (promoted, or a primary)".into())
                        }
                        None => {
                            r.mark_down("replay lag unknown: no transaction replayed yet".into())
                        }
                        Some(lag) if lag > max_lag.as_secs_f64() => r.mark_down(format!(
                            "replay lag {lag:.3}s over the bound of {:.3}s",
                            max_lag.as_secs_f64()
                        )),
                        Some(_) => r.mark_up(),
                    }
                }
                Err(e) => {
                    // A connection cut mid-check is in an unknown state: start afresh.
                    conn = None;
                    r.set_lag(None);
                    r.mark_down(describe(&e));
                }
            }
            drop(set);
            if let Some(tx) = first.take() {
                let _ = tx.send(());
            }
            tokio::time::sleep(interval).await;
        }
        if let Some(c) = conn {
            let _ = tokio::time::timeout(Duration::from_secs(1), c.close()).await;
        }
    }

    async fn probe(conn: &mut Option<PgConnection>, options: &PgConnectOptions) -> Result<Probe> {
        let c = match conn {
            Some(c) => c,
            None => conn.insert(PgConnection::connect_with(options).await?),
        };
        let (in_recovery, lag, replay_lsn): (bool, Option<f64>, Option<i64>) =
            sqlx::query_as(PROBE).fetch_one(&mut *c).await?;
        Ok(Probe {
            in_recovery,
            lag: lag.map(|l| l.max(0.0)),
            replay_lsn,
        })
    }

    /// Read-your-writes over a replicated [`DbPool`]: a caller's handle that remembers
    /// the primary's WAL position after its last write, and reads from a replica only
    /// once that replica has replayed past it (otherwise from the primary). Cheap to
    /// create (one per request or per user flow); carry
    /// [`written_lsn`](Self::written_lsn) across requests (a cookie, a header) and
    /// resume with [`with_written_lsn`](Self::with_written_lsn).
    ///
    /// ```no_run
    /// use cortex_pool::{DbConfig, DbPool};
    ///
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = DbPool::postgres(DbConfig::from_env()?).await?;
    /// let mut session = pool.session();
    /// {
    ///     let mut conn = session.acquire().await?; // the primary
    ///     sqlx::query("INSERT INTO notes (body) VALUES ('hi')").execute(&mut **conn).await?;
    ///     session.mark_written(&mut conn).await?; // after the commit
    /// }
    /// // A replica that has not replayed the insert yet is passed over.
    /// let mut conn = session.acquire_read().await?;
    /// let n: i64 = sqlx::query_scalar("SELECT count(*) FROM notes").fetch_one(&mut **conn).await?;
    /// assert!(n >= 1);
    /// # Ok(())
    /// # }
    /// ```
    #[derive(Clone, Debug)]
    pub struct Session {
        pool: DbPool<Postgres>,
        written: Option<u64>,
    }

    impl DbPool<Postgres> {
        /// A [`Session`] on this pool that has written nothing yet.
        pub fn session(&self) -> Session {
            Session {
                pool: self.clone(),
                written: None,
            }
        }
    }

    impl Session {
        /// A connection to the primary, for writes and transactions (as
        /// [`DbPool::acquire`]).
        ///
        /// # Errors
        /// As [`DbPool::acquire`].
        #[track_caller]
        pub fn acquire(&self) -> impl Future<Output = Result<DbConn<Postgres>>> + Send + '_ {
            self.pool.acquire()
        }

        /// Remember the primary's WAL position now, on `conn` (a primary connection,
        /// after the write committed): later reads of this session see the write.
        ///
        /// # Errors
        /// [`Error::Database`] when the query fails, e.g. on a replica connection
        /// (SQLSTATE 55000, recovery is in progress).
        pub async fn mark_written(&mut self, conn: &mut DbConn<Postgres>) -> Result<()> {
            let lsn: i64 = sqlx::query_scalar(WRITE_LSN)
                .fetch_one(&mut ***conn)
                .await?;
            self.remember(lsn);
            Ok(())
        }

        /// As [`mark_written`](Self::mark_written), on a connection of its own from
        /// the primary pool: for writes made through [`DbPool::inner`].
        ///
        /// # Errors
        /// As [`DbPool::acquire`] and [`mark_written`](Self::mark_written).
        pub async fn mark_written_now(&mut self) -> Result<()> {
            let lsn: i64 = sqlx::query_scalar(WRITE_LSN)
                .fetch_one(self.pool.inner())
                .await?;
            self.remember(lsn);
            Ok(())
        }

        fn remember(&mut self, lsn: i64) {
            let lsn = u64::try_from(lsn).unwrap_or(0);
            self.written = Some(self.written.map_or(lsn, |w| w.max(lsn)));
        }

        /// The primary's WAL position after this session's last write (bytes from
        /// `0/0`), or `None` before any.
        pub fn written_lsn(&self) -> Option<u64> {
            self.written
        }

        /// This session, resumed with a position from
        /// [`written_lsn`](Self::written_lsn) (of an earlier request).
        pub fn with_written_lsn(mut self, lsn: Option<u64>) -> Self {
            self.written = lsn;
            self
        }

        /// A connection for reads that sees this session's writes: before any write,
        /// as [`DbPool::acquire_read`]; after one, a healthy replica known to have
        /// replayed past it (asking the replica when its last check is older than the
        /// write: one extra round trip), otherwise the primary.
        ///
        /// # Errors
        /// Only the primary's, as for [`DbPool::acquire`].
        #[track_caller]
        pub fn acquire_read(&self) -> impl Future<Output = Result<DbConn<Postgres>>> + Send + '_ {
            let at = std::panic::Location::caller();
            crate::span::acquire("db-read", async move {
                let Some(written) = self.written else {
                    return self.read_any(at).await;
                };
                if let Some(set) = self.pool.replica_set() {
                    for i in set.order() {
                        let r = &set.replicas[i];
                        let known = r.replay_lsn.load(Relaxed);
                        let Some(mut conn) = set.try_acquire(i, at).await else {
                            continue;
                        };
                        if known >= written {
                            return Ok(conn);
                        }
                        let asked = tokio::time::timeout(
                            set.check_bound,
                            sqlx::query_scalar::<_, Option<i64>>(REPLAY_LSN).fetch_one(&mut **conn),
                        )
                        .await;
                        if let Ok(Ok(Some(lsn))) = asked {
                            let lsn = u64::try_from(lsn).unwrap_or(0);
                            r.replay_lsn.fetch_max(lsn, Relaxed);
                            if lsn >= written {
                                return Ok(conn);
                            }
                        }
                    }
                }
                self.pool.acquire_at(at).await
            })
        }

        async fn read_any(
            &self,
            at: &'static std::panic::Location<'static>,
        ) -> Result<DbConn<Postgres>> {
            if let Some(set) = self.pool.replica_set() {
                for i in set.order() {
                    if let Some(conn) = set.try_acquire(i, at).await {
                        return Ok(conn);
                    }
                }
            }
            self.pool.acquire_at(at).await
        }
    }
}
