use std::sync::Arc;
use std::time::Duration;

use cortex_metrics::{Counter, Histogram, Metrics};

/// Handles into a cortex-metrics registry for one pool, resolved once so recording
/// never looks a name up.
///
/// Series, one family each, labeled `pool="<name>"` so pools aggregate and compare:
/// the histograms `pool.acquire_wait` and `pool.hold` (exported in seconds,
/// `cortex_pool_acquire_wait_seconds{pool="db"}`), the counters `pool.timeouts`,
/// `pool.created`, `pool.closed` and `pool.leaks` (guards held past the leak
/// threshold). Without the `metrics` feature every method is a no-op.
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
                acquire_wait: seconds("pool.acquire_wait"),
                hold: seconds("pool.hold"),
                timeouts: counter("pool.timeouts"),
                created: counter("pool.created"),
                closed: counter("pool.closed"),
                leaks: counter("pool.leaks"),
            })),
        }
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
