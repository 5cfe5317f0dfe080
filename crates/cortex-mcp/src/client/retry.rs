//! When a failed attempt is tried again, and after how long: pure functions of the
//! call's state, so the rules are tested without a server.

use std::time::Duration;

use cortex_support::backoff::Backoff;

use crate::McpClientConfig;

/// The wait before retry number `retry + 1`: `retry_delay * 2^retry`, capped at
/// `max_retry_delay`, with equal jitter so clients that failed together do not retry
/// together.
pub(super) fn backoff(config: &McpClientConfig, retry: u32) -> Duration {
    Backoff::new(config.retry_delay, config.max_retry_delay).delay(retry)
}

/// What is known after an attempt failed with a retryable error.
#[derive(Debug, Clone, Copy)]
pub(super) struct Attempted {
    /// A copy of the request may have reached the service.
    pub(super) maybe_sent: bool,
    /// The call may run twice (declared or annotated so, or not a tool call).
    pub(super) repeatable: bool,
    /// Retries made so far.
    pub(super) retries: u32,
    /// `max_retries` of the config.
    pub(super) max_retries: u32,
    /// The client is closing.
    pub(super) closed: bool,
    /// The wait before the next retry.
    pub(super) delay: Duration,
    /// Time left before the call's deadline.
    pub(super) remaining: Duration,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Wait this long, then try again.
    RetryAfter(Duration),
    /// Answer with the error.
    Fail,
    /// Answer [`Error::Indeterminate`](crate::Error::Indeterminate): the call may have
    /// run and must not be sent again.
    Indeterminate,
}

/// The rule: a call that may have reached the service and may not run twice ends
/// indeterminate; otherwise it is retried while retries are left, the client is open,
/// and the wait ends before the call's deadline (else the caller gets the error now
/// rather than after a wait that cannot help).
pub(super) fn next_step(a: Attempted) -> Step {
    if a.maybe_sent && !a.repeatable {
        Step::Indeterminate
    } else if a.retries >= a.max_retries || a.closed || a.delay >= a.remaining {
        Step::Fail
    } else {
        Step::RetryAfter(a.delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters_within_half() {
        let config = McpClientConfig {
            retry_delay: Duration::from_millis(100),
            max_retry_delay: Duration::from_millis(350),
            ..McpClientConfig::default()
        };
        for (retry, nominal) in [(0, 100), (1, 200), (2, 350), (40, 350)] {
            let nominal = Duration::from_millis(nominal);
            let waits: Vec<_> = (0..200).map(|_| backoff(&config, retry)).collect();
            assert!(
                waits.iter().all(|w| *w >= nominal / 2 && *w <= nominal),
                "{retry}: {waits:?}"
            );
            assert!(
                waits.iter().any(|w| *w != waits[0]),
                "jitter varies the waits"
            );
        }
    }

    fn attempted() -> Attempted {
        Attempted {
            maybe_sent: false,
            repeatable: true,
            retries: 0,
            max_retries: 3,
            closed: false,
            delay: Duration::from_millis(100),
            remaining: Duration::from_secs(10),
        }
    }

    #[test]
    fn a_call_that_may_have_run_and_may_not_run_twice_is_never_resent() {
        let a = Attempted {
            maybe_sent: true,
            repeatable: false,
            ..attempted()
        };
        assert_eq!(next_step(a), Step::Indeterminate);
        // Provably never sent: retried whatever the tool.
        let a = Attempted {
            maybe_sent: false,
            ..a
        };
        assert_eq!(next_step(a), Step::RetryAfter(Duration::from_millis(100)));
        // Safe to repeat: retried even if it may have run.
        let a = Attempted {
            maybe_sent: true,
            repeatable: true,
            ..a
        };
        assert_eq!(next_step(a), Step::RetryAfter(Duration::from_millis(100)));
    }

    #[test]
    fn retries_stop_when_spent_closed_or_past_the_deadline() {
        let spent = Attempted {
            retries: 3,
            ..attempted()
        };
        assert_eq!(next_step(spent), Step::Fail);
        let closed = Attempted {
            closed: true,
            ..attempted()
        };
        assert_eq!(next_step(closed), Step::Fail);
        let late = Attempted {
            remaining: Duration::from_millis(100),
            ..attempted()
        };
        assert_eq!(next_step(late), Step::Fail);
        let zero = Attempted {
            max_retries: 0,
            ..attempted()
        };
        assert_eq!(next_step(zero), Step::Fail);
    }
}
