//! Waits between retries: exponential, capped, with jitter, the same in every crate.
//!
//! Clients that failed together must not retry together, so every wait is jittered
//! ("equal jitter": half the nominal wait fixed, half random), which also keeps every
//! wait at least half the nominal one.
//!
//! ```
//! use std::time::Duration;
//! use cortex_support::backoff::Backoff;
//!
//! let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
//! assert_eq!(backoff.nominal(0), Duration::from_millis(100));
//! assert_eq!(backoff.nominal(3), Duration::from_millis(800));
//! assert_eq!(backoff.nominal(30), Duration::from_secs(2));
//! let wait = backoff.delay(3);
//! assert!(wait >= Duration::from_millis(400) && wait <= Duration::from_millis(800));
//! ```

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Exponential backoff: `base * 2^attempt`, capped at `max`, jittered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait (attempt 0).
    pub base: Duration,
    /// No wait is longer than this.
    pub max: Duration,
    /// Whether [`Backoff::delay`] jitters (on by default; off makes waits predictable).
    pub jitter: bool,
}

impl Backoff {
    /// Waits doubling from `base`, capped at `max`, jittered.
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            jitter: true,
        }
    }

    /// The same waits without jitter.
    #[must_use]
    pub const fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// The wait before retry `attempt` (0-based) before jitter: `base * 2^attempt`,
    /// capped at `max`; never overflows.
    pub fn nominal(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The wait before retry `attempt` (0-based): [`Backoff::nominal`], jittered
    /// between half of it and all of it.
    pub fn delay(&self, attempt: u32) -> Duration {
        let nominal = self.nominal(attempt);
        if self.jitter {
            equal_jitter(nominal)
        } else {
            nominal
        }
    }
}

/// Half of `delay` fixed, half random: between `delay / 2` and `delay`.
pub fn equal_jitter(delay: Duration) -> Duration {
    let half = delay / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    let extra = match nanos.checked_add(1) {
        Some(span) => fast_random() % span,
        None => fast_random(),
    };
    half.saturating_add(Duration::from_nanos(extra))
}

/// A fast per-thread random number (xorshift64*), for spreading retries; not for ids.
fn fast_random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(random_u64() | 1);
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// A random `u64` that differs across calls, threads and processes, for ids drawn by
/// many processes at once (which therefore must not be sequential).
pub fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded from the OS once per thread and stepped per `new`; mixing in
    // a counter, the clock and the pid keeps values apart across threads and processes.
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_cap_and_jitter_within_half() {
        let b = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        let mut seen = std::collections::HashSet::new();
        for attempt in 0..40 {
            let nominal = b.nominal(attempt);
            assert!(nominal <= Duration::from_secs(2));
            for _ in 0..50 {
                let d = b.delay(attempt);
                assert!(d >= nominal / 2 && d <= nominal, "{attempt}: {d:?}");
                seen.insert(d);
            }
        }
        assert!(seen.len() > 100, "jitter spreads waits: {}", seen.len());
        assert_eq!(b.without_jitter().delay(2), Duration::from_millis(200));
        // Huge settings saturate instead of overflowing.
        let huge = Backoff::new(Duration::MAX, Duration::MAX);
        assert_eq!(huge.nominal(u32::MAX), Duration::MAX);
        assert!(huge.delay(u32::MAX) >= Duration::MAX / 2);
    }

    #[test]
    fn random_values_differ() {
        let a: std::collections::HashSet<u64> = (0..1000).map(|_| random_u64()).collect();
        assert_eq!(a.len(), 1000);
    }
}
