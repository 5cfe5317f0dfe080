use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::histogram::{shard_count, thread_shard};

#[repr(align(128))]
#[derive(Default)]
struct Slot(AtomicU64);

/// A sharded monotonic counter (cache hits, bytes sent...): one relaxed `fetch_add` on a
/// per-thread cache line, a window since the last reset and a cumulative total.
///
/// ```
/// use cortex_metrics::Counter;
///
/// let hits = Counter::new();
/// hits.add(3);
/// hits.reset_window();
/// hits.increment();
/// assert_eq!((hits.window(), hits.total()), (1, 4));
/// ```
pub struct Counter {
    slots: Box<[Slot]>,
    mask: usize,
    baseline: AtomicU64,
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counter")
            .field("total", &self.total())
            .field("window", &self.window())
            .finish()
    }
}

impl Default for Counter {
    fn default() -> Self {
        Self::new()
    }
}

impl Counter {
    /// A counter at zero.
    pub fn new() -> Self {
        let n = shard_count();
        Self {
            slots: (0..n).map(|_| Slot::default()).collect(),
            mask: n - 1,
            baseline: AtomicU64::new(0),
        }
    }

    /// Add `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.slots[thread_shard() & self.mask]
            .0
            .fetch_add(n, Relaxed);
    }

    /// Add one.
    #[inline]
    pub fn increment(&self) {
        self.add(1);
    }

    /// Everything added since creation.
    pub fn total(&self) -> u64 {
        self.slots
            .iter()
            .fold(0u64, |acc, s| acc.wrapping_add(s.0.load(Relaxed)))
    }

    /// Added since the last [`reset_window`](Self::reset_window).
    pub fn window(&self) -> u64 {
        self.total().saturating_sub(self.baseline.load(Relaxed))
    }

    /// Start a new window; the total keeps counting.
    pub fn reset_window(&self) {
        self.baseline.store(self.total(), Relaxed);
    }
}
