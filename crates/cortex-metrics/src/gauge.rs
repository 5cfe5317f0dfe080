use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A value that goes up and down (queue depth, open connections, bytes in use): an
/// `f64` in one atomic word. `set` is one store; `add`, `inc`, `dec` are a short
/// compare-and-swap loop.
///
/// Get one named (and labeled) from a registry with
/// [`Metrics::gauge`](crate::Metrics::gauge) or
/// [`Metrics::gauge_with`](crate::Metrics::gauge_with); for a value read from elsewhere
/// when scraped, see [`Metrics::gauge_fn`](crate::Metrics::gauge_fn).
///
/// ```
/// use cortex_metrics::Gauge;
///
/// let in_flight = Gauge::new();
/// in_flight.inc();
/// in_flight.inc();
/// in_flight.dec();
/// assert_eq!(in_flight.get(), 1.0);
/// in_flight.set(-2.5);
/// assert_eq!(in_flight.get(), -2.5);
/// ```
pub struct Gauge {
    bits: AtomicU64,
}

impl std::fmt::Debug for Gauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gauge").field("value", &self.get()).finish()
    }
}

impl Default for Gauge {
    fn default() -> Self {
        Self::new()
    }
}

impl Gauge {
    /// A gauge at zero.
    pub const fn new() -> Self {
        Self {
            // 0.0_f64 has the bit pattern 0.
            bits: AtomicU64::new(0),
        }
    }

    /// Set the value.
    #[inline]
    pub fn set(&self, value: f64) {
        self.bits.store(value.to_bits(), Relaxed);
    }

    /// Add `delta` (negative to subtract).
    #[inline]
    pub fn add(&self, delta: f64) {
        // `fetch_update` retries until no other writer raced us, so no update is lost.
        let _ = self.bits.fetch_update(Relaxed, Relaxed, |bits| {
            Some((f64::from_bits(bits) + delta).to_bits())
        });
    }

    /// Subtract `delta`.
    #[inline]
    pub fn sub(&self, delta: f64) {
        self.add(-delta);
    }

    /// Add one.
    #[inline]
    pub fn inc(&self) {
        self.add(1.0);
    }

    /// Subtract one.
    #[inline]
    pub fn dec(&self) {
        self.add(-1.0);
    }

    /// The current value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.bits.load(Relaxed))
    }
}
