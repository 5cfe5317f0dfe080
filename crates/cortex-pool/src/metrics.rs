use std::sync::Arc;
use std::time::Duration;

use cortex_metrics::{Counter, Histogram, Metrics};

/// Handles into a cortex-metrics registry for one pool, resolved once so recording
/// never looks a name up.
///
/// Series, with `<name>` the pool's name: `pool.<name>.acquire_wait` and
/// `pool.<name>.hold` (nanoseconds), `pool.<name>.timeouts`, `pool.<name>.created`,
/// `pool.<name>.closed`, `pool.<name>.leaks` (guards held past the leak threshold).
/// Without the `metrics` feature every method is a no-op.
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
        let series = |what: &str| format!("pool.{name}.{what}");
        Self {
            inner: Some(Arc::new(Handles {
                acquire_wait: registry.histogram(&series("acquire_wait")),
                hold: registry.histogram(&series("hold")),
                timeouts: registry.counter(&series("timeouts")),
                created: registry.counter(&series("created")),
                closed: registry.counter(&series("closed")),
                leaks: registry.counter(&series("leaks")),
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
