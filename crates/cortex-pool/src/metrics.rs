use std::sync::{Arc, Weak};
use std::time::Duration;

use cortex_metrics::{Counter, Histogram, Metrics};

use crate::PoolStatus;

/// One level gauge: its registry name and the figure of a [`PoolStatus`] it reads.
type Level = (&'static str, fn(&PoolStatus) -> usize);

/// The level gauges every pool registers.
const LEVELS: [Level; 5] = [
    ("pool.size", |s| s.size),
    ("pool.idle", |s| s.idle),
    ("pool.in_use", |s| s.in_use),
    ("pool.max_size", |s| s.max),
    ("pool.waiting", |s| s.waiting),
];

/// Handles into a cortex-metrics registry for one pool, resolved once so recording
/// never looks a name up.
///
/// Series, one family each, labeled `pool="<name>"` so pools aggregate and compare:
/// the histograms `pool.acquire_wait` and `pool.hold` (exported in seconds,
/// `cortex_pool_acquire_wait_seconds{pool="db"}`), the counters `pool.timeouts`,
/// `pool.created`, `pool.closed` and `pool.leaks` (guards held past the leak
/// threshold); and the level gauges, read from the pool when scraped:
/// `pool.size` (objects or connections open), `pool.idle`, `pool.in_use`,
/// `pool.max_size` (the configured maximum) and `pool.waiting` (callers inside
/// `acquire`), exported as `cortex_pool_in_use{pool="db"}` and so on. A pool registers
/// its gauges when it is built ([`register_levels`](Self::register_levels)); they read
/// `NaN` once it is dropped, and a new pool of the same name takes the series over.
/// Without the `metrics` feature every method is a no-op and nothing is registered.
///
/// ```
/// use cortex_metrics::Metrics;
/// use cortex_pool::PoolMetrics;
///
/// let registry = Metrics::new();
/// let metrics = PoolMetrics::new(&registry, "db");
/// metrics.timeout();
/// // Without the `metrics` feature nothing is recorded.
/// let expected = if cfg!(feature = "metrics") { 1 } else { 0 };
/// assert_eq!(registry.counter_with("pool.timeouts", &[("pool", "db")])?.total(), expected);
/// # Ok::<(), cortex_metrics::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct PoolMetrics {
    inner: Option<Arc<Handles>>,
}

#[derive(Debug)]
struct Handles {
    /// Kept to register the level gauges when the pool is built.
    registry: Metrics,
    name: Box<str>,
    acquire_wait: Arc<Histogram>,
    hold: Arc<Histogram>,
    timeouts: Arc<Counter>,
    created: Arc<Counter>,
    closed: Arc<Counter>,
    leaks: Arc<Counter>,
}

impl PoolMetrics {
    /// Record pool `name` into `registry`.
    pub fn new(registry: &Metrics, name: &str) -> Self {
        if !cfg!(feature = "metrics") {
            return Self::disabled();
        }
        let labels = [("pool", name)];
        // `pool` is a valid label name, so these cannot fail; an unnamed series is the
        // fallback that keeps recording if a registry ever refused one.
        let seconds = |what: &str| {
            registry
                .histogram_seconds_with(what, &labels)
                .unwrap_or_else(|_| registry.histogram_seconds(what))
        };
        let counter = |what: &str| {
            registry
                .counter_with(what, &labels)
                .unwrap_or_else(|_| registry.counter(what))
        };
        Self {
            inner: Some(Arc::new(Handles {
                registry: registry.clone(),
                name: name.into(),
                acquire_wait: seconds("pool.acquire_wait"),
                hold: seconds("pool.hold"),
                timeouts: counter("pool.timeouts"),
                created: counter("pool.created"),
                closed: counter("pool.closed"),
                leaks: counter("pool.leaks"),
            })),
        }
    }

    /// Register the level gauges of the pool `pool`, read by `read` at scrape time:
    /// `pool.size`, `pool.idle`, `pool.in_use`, `pool.max_size` and `pool.waiting`,
    /// labeled with this recorder's pool name. The registry keeps only a [`Weak`]
    /// reference, so the gauges read `NaN` once `pool` is dropped; registering again
    /// under the same name (a recreated pool) replaces the readers. `read` runs on the
    /// scraping thread: it must be quick and must not block. The pools of this crate
    /// call this themselves when they are built; it is public for pools built
    /// elsewhere. Does nothing when [`disabled`](Self::disabled).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    /// use cortex_metrics::Metrics;
    /// use cortex_pool::{PoolMetrics, PoolStatus};
    ///
    /// struct Conns { open: AtomicUsize }
    ///
    /// let registry = Metrics::new();
    /// let pool = Arc::new(Conns { open: AtomicUsize::new(3) });
    /// PoolMetrics::new(&registry, "custom").register_levels(&pool, |c: &Conns| {
    ///     let open = c.open.load(Relaxed);
    ///     PoolStatus { size: open, idle: 0, in_use: open, max: 8, waiting: 0 }
    /// });
    /// if cfg!(feature = "metrics") {
    ///     assert!(registry.prometheus().contains("cortex_pool_in_use{pool=\"custom\"} 3\n"));
    ///     drop(pool);
    ///     assert!(registry.prometheus().contains("cortex_pool_in_use{pool=\"custom\"} NaN\n"));
    /// }
    /// ```
    pub fn register_levels<T>(&self, pool: &Arc<T>, read: fn(&T) -> PoolStatus)
    where
        T: Send + Sync + 'static,
    {
        let Some(h) = &self.inner else { return };
        for (what, field) in LEVELS {
            let weak: Weak<T> = Arc::downgrade(pool);
            let gauge = move || {
                weak.upgrade()
                    .map_or(f64::NAN, |pool| field(&read(&pool)) as f64)
            };
            // `pool` is a valid label name, so this cannot fail; the unlabeled series
            // is the fallback, as for the other handles.
            if h.registry
                .gauge_fn(what, &[("pool", &h.name)], gauge.clone())
                .is_err()
            {
                let _ = h.registry.gauge_fn(what, &[], gauge);
            }
        }
    }

    /// The registry and the pool name it records under; `None` when
    /// [`disabled`](Self::disabled). Parts built alongside the pool (a database pool's
    /// read replicas) record into the same registry under names derived from it.
    pub fn scope(&self) -> Option<(&Metrics, &str)> {
        self.inner.as_deref().map(|h| (&h.registry, &*h.name))
    }

    /// Record nothing.
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// `false` for [`disabled`](Self::disabled) (or without the `metrics` feature):
    /// pools skip their clock reads then.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// A caller waited `d` for an object.
    #[inline]
    pub fn acquire_wait(&self, d: Duration) {
        if let Some(h) = &self.inner {
            h.acquire_wait.record_duration(d);
        }
    }

    /// A caller held an object for `d`.
    #[inline]
    pub fn hold(&self, d: Duration) {
        if let Some(h) = &self.inner {
            h.hold.record_duration(d);
        }
    }

    /// An acquire timed out.
    #[inline]
    pub fn timeout(&self) {
        if let Some(h) = &self.inner {
            h.timeouts.increment();
        }
    }

    /// An object or connection was created.
    #[inline]
    pub fn created(&self) {
        if let Some(h) = &self.inner {
            h.created.increment();
        }
    }

    /// An object or connection was closed (broken, recycled, detached or the pool shut).
    #[inline]
    pub fn closed(&self) {
        if let Some(h) = &self.inner {
            h.closed.increment();
        }
    }

    /// A guard was held longer than the leak threshold.
    #[inline]
    pub fn leak(&self) {
        if let Some(h) = &self.inner {
            h.leaks.increment();
        }
    }

    /// Record a hold of `held`, and warn when it passed `threshold` (zero: never),
    /// naming where the guard was acquired.
    pub(crate) fn release(
        &self,
        what: &'static str,
        held: Duration,
        threshold: Duration,
        at: &'static std::panic::Location<'static>,
    ) {
        self.hold(held);
        if !threshold.is_zero() && held > threshold {
            self.leak();
            tracing::warn!(
                held_ms = held.as_millis() as u64,
                threshold_ms = threshold.as_millis() as u64,
                acquired_at = %at,
                "{what} held longer than the leak threshold"
            );
        }
    }
}
