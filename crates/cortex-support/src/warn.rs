//! A rate-limited warning, so an outage logs a line a period instead of one per request.
//!
//! ```
//! use std::time::Duration;
//! use cortex_support::warn::WarnLimiter;
//!
//! let limiter = WarnLimiter::new(Duration::from_secs(1));
//! let mut lines = 0;
//! for _ in 0..5 {
//!     limiter.note(|suppressed| {
//!         lines += 1;
//!         tracing::warn!(suppressed, "redis unreachable");
//!     });
//! }
//! assert_eq!(lines, 1);
//! assert_eq!(limiter.suppressed(), 4);
//! ```

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets one call through per period and counts the rest, which the next line reports.
#[derive(Debug)]
pub struct WarnLimiter {
    period: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl WarnLimiter {
    /// One line per `period`.
    pub const fn new(period: Duration) -> Self {
        Self {
            period,
            state: Mutex::new((None, 0)),
        }
    }

    /// Calls `log` with the number of calls suppressed since the last line, unless a
    /// line was written within the period (then counts this call as suppressed).
    pub fn note(&self, log: impl FnOnce(u64)) {
        let suppressed = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            match state.0 {
                Some(at) if now.duration_since(at) < self.period => {
                    state.1 += 1;
                    return;
                }
                _ => {
                    state.0 = Some(now);
                    std::mem::take(&mut state.1)
                }
            }
        };
        log(suppressed);
    }

    /// Calls suppressed since the last line.
    pub fn suppressed(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1
    }
}

impl Default for WarnLimiter {
    /// One line a second.
    fn default() -> Self {
        Self::new(Duration::from_secs(1))
    }
}
