//! Retries of in-process tasks: how many, and how long to wait between them.

use std::time::Duration;

use cortex_support::backoff::Backoff;

/// Retries with exponential backoff: `attempts` in all, waiting `base`, `2 * base`,
/// `4 * base`, ... (at most `max_backoff`) between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// Wait before the second attempt.
    pub base: Duration,
    /// Cap on any one wait.
    pub max_backoff: Duration,
}

impl Retry {
    /// `attempts` in all, waits doubling from `base`, capped at one minute.
    pub fn exponential(attempts: u32, base: Duration) -> Self {
        Self {
            attempts: attempts.max(1),
            base,
            max_backoff: Duration::from_secs(60),
        }
    }

    /// The wait after `failed_attempts` failed attempts (1 for the first): `base`,
    /// doubling, at most `max_backoff`. Not jittered: these retries are one process's
    /// own, with nothing to spread apart, and a caller can tell the waits in advance.
    pub(super) fn backoff(&self, failed_attempts: u32) -> Duration {
        Backoff::new(self.base, self.max_backoff).nominal(failed_attempts.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_base_up_to_the_cap() {
        let r = Retry::exponential(5, Duration::from_millis(100));
        let waits: Vec<Duration> = (1..=5).map(|n| r.backoff(n)).collect();
        assert_eq!(
            waits,
            [100, 200, 400, 800, 1600]
                .map(Duration::from_millis)
                .to_vec()
        );
        assert_eq!(r.backoff(0), Duration::from_millis(100));
        assert_eq!(
            r.backoff(40),
            Duration::from_secs(60),
            "capped at max_backoff"
        );
        assert_eq!(r.backoff(u32::MAX), Duration::from_secs(60), "no overflow");
        let huge = Retry {
            attempts: 2,
            base: Duration::MAX,
            max_backoff: Duration::MAX,
        };
        assert_eq!(
            huge.backoff(3),
            Duration::MAX,
            "saturates instead of panicking"
        );
    }

    #[test]
    fn at_least_one_attempt() {
        assert_eq!(Retry::exponential(0, Duration::ZERO).attempts, 1);
    }
}
